"""The comparison's outputs: seed 003's console table, files, plots and a live dashboard.

The ``quart-faas compare`` CLI runs the systems and calls these; nothing here
runs a system.  Import the submodules directly (``plots`` pulls in
matplotlib, which a table-only caller need not pay for).  A compare run
uses them like this::

    from benchmark.report.dashboard import Dashboard
    from benchmark.report.files import write_report
    from benchmark.report.table import comparison_rows, render_rich
    from benchmark.results import summarize

    with Dashboard(names, slo_s=slo, duration_s=dur, dashboard=args.dashboard) as dash:
        results = [run(system, on_progress=dash.update) for system in systems]
    rows = comparison_rows([summarize(r, args.name) for r in results], baseline="openfaas-ce")
    rich.print(render_rich(rows, [r.system for r in results]))
    files = write_report(results, out_dir, args.name, plots=True)  # CSVs, JSON, .txt, PNGs

and, for a CV sweep, ``plots.plot_cv_sweep([(cv, system, summary), ...], path)``.
"""
