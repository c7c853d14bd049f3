"""The comparison's outputs: seed 003's console table, files, plots and a live dashboard.

The ``quart-faas compare`` CLI runs the systems and calls these; nothing here
runs a system.  Import the submodules directly (``benchmark.report.plots``
pulls in matplotlib, which a table-only caller need not pay for).
"""
