"""Quart-FaaS: serve large models as pipelines of OpenFaaS functions."""
__version__ = "0.1.0"
