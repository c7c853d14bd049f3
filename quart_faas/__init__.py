"""Quart-FaaS: serve large models as pipelines of OpenFaaS functions.

This package is the front door: the ``quart-faas`` command line (``cli``) and
the demos (``make demo``).  It sits above every service and the benchmark
harness, and only the checks import it (docs/architecture.md).
"""
__version__ = "0.1.0"
