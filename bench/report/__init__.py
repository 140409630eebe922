"""Reports of runs: reading every result source, the analysis, the figures and the page.

- :mod:`bench.report.sources`: the runner's run folders, asv's results and pytest-benchmark's JSON
  files read into one tidy frame, and the side-by-side table of them;
- :mod:`bench.report.analysis`: speedups over the seeds' pipeline, headlines, the comparison of two
  runs: pandas only, no drawing (the runner uses it too);
- :mod:`bench.report.figures`: every figure, drawn with matplotlib (the only module that imports it);
- :mod:`bench.report.render`: a section of the page as a description, rendered to HTML and Markdown;
- :mod:`bench.report.page`: :func:`~bench.report.page.build`, one function per section, and the files.
Import the submodule you need: this package imports nothing, so the runner never loads matplotlib.
"""
