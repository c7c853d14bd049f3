"""Checking tools: they exercise the real system to find faults, they measure nothing.

``python -m checks.soak --minutes 30 [--faults]``  the whole system under bursty
    load for a long time, with injected faults; reports leaks and recoveries.
``python -m checks.fuzz --minutes N``  schemathesis against every HTTP service's
    published OpenAPI document (``make test`` runs a bounded one).

They sit on top of the other packages (docs/architecture.md): they deploy
through ``local_provider``, send load with ``benchmark.openloop`` and use the
demo's sentences; nothing imports them but the tests.
"""
