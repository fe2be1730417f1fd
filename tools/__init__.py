"""Tools around the notebooks, run from the project's root (``python -m tools.<name>``).

They are not part of :mod:`nbhelpers`, the package that the notebooks and their
Ray workers import:

- ``doctor``: what this machine needs, checked in seconds (``make doctor``)
- ``prefetch``: download weights and datasets once (``make prefetch``)
- ``papermill_runner``: execute one notebook under an outer time limit
- ``run_notebooks``: run every notebook and write a report (``make run``, ``make smoke``)
- ``report``: the run's HTML pages and its index
- ``lock``: write ``constraints.txt``, the exact versions ``make setup`` installs (``make lock``)
"""
