"""Embedded OpenFaaS-compatible provider + gateway for one machine, without containers.

Two roles, usable apart or together (``python -m local_provider --role ...``):

* provider (port 8081): the faas-provider REST API (``/system/functions``,
  ``/system/function/{name}``, ``/system/scale-function/{name}``, ``/system/info``,
  ``/system/namespaces``, ``/system/secrets``, ``/system/logs``, ``/healthz``) and
  ``/function/{name}`` invocation.  Replicas are real processes:
  ``python <template>/index.py`` running the handler folder the deployment's image
  resolves to (``images.py``: ``quart-faas build``'s index, faas-cli's shrinkwrap
  output, or annotation ``com.openfaas.quart.handler``).
* gateway (port 8080, metrics on 8082): ``/function/*`` with the upstream
  gateway's Prometheus metrics, ``/system/*`` forwarded behind basic auth.

Unlike OpenFaaS CE there is no 5-replica cap: scale requests may go up to
``QUART_MAX_REPLICAS`` (default 32) per function, and down to 0.

Entry point: ``local_provider.server.serve(config, role)``; configuration:
``local_provider.config`` (every environment variable and default).
"""
