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

Also here, because they exist to run the stack on one machine:

* the scheduler: ``placement`` (cache-aware, KL-dispersed) and ``nodes``
  (simulated nodes, one keys_manager each) -- the provider places replicas,
  as kube-scheduler does; the autoscaling plugin only sets their number;
* ``quart-faas up``/``down``: ``deploy`` (start the local gateway if nothing
  answers, then deploy a stack as ``faas-cli deploy`` does), ``services``
  (the background processes ``up`` starts and ``down`` stops),
  ``prometheus`` and ``plugin_services`` (Prometheus, Redis and the plugin
  beside the gateway).  The benchmarks and checks deploy through them too.
"""
