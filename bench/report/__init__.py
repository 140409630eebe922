"""Reports of runs: reading every result source, the analysis, the figures and the page.

- :mod:`bench.report.analysis`: speedups over the seeds' pipeline, headlines, the comparison of two
  runs: pandas only, no drawing (the runner uses it too);
- :mod:`bench.report.page`: the static page (``index.html`` and ``report.md``) with its figures.
Import the submodule you need: this package imports nothing, so the runner never loads matplotlib.
"""
