"""Reports of runs: reading every result source, the analysis, the figures and the page.

- :mod:`bench.report.sources`: the runner's run folders, asv's results and pytest-benchmark's JSON
  files read into one tidy frame, and the side-by-side table of them;
- :mod:`bench.report.analysis`: speedups over the seeds' pipeline, headlines, the comparison of two
  runs: pandas only, no drawing (the runner uses it too);
- :mod:`bench.report.figures`: every figure, drawn with matplotlib (the only module that imports it);
- :mod:`bench.report.render`: a section of the page as a description, rendered to HTML and Markdown;
- :mod:`bench.report.listings`: the tables of cells (all cells, those not timed by reason) and environments;
- :mod:`bench.report.signals`: instructions per step (``counts.csv``) beside the run's step times;
- :mod:`bench.report.roofline_why`: why a form is not at the roofline, from the run's ``profiles/``;
- :mod:`bench.report.history`: asv's series over commits with their change points;
- :mod:`bench.report.shot`: the page opened in headless Chromium: its checks, and a screenshot;
- :mod:`bench.report.page`: :func:`~bench.report.page.build`, one function per section, and the files.
Import the submodule you need: this package imports nothing, so the runner never loads matplotlib.
"""
