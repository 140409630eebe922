"""The equal-results gate: what a form is checked on (:mod:`cases`) and how it is judged against the fp64 oracle
(:mod:`check`)."""
