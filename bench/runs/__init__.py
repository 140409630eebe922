"""Run folders: their files and schema (:mod:`run_folder`), the store that writes them atomically (:mod:`store`,
:mod:`folder`), the metadata, shards and merges, the terminal summary, and the statuses and interruptions of a
run."""
