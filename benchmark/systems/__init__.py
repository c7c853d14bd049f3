"""Compared autoscalers, each behind :class:`benchmark.systems.base.Autoscaler`.

``registry.SYSTEMS`` maps each ``--systems`` name to a factory; the modules
are ``quart`` (the plugin's chain and its ablations), ``openfaas_ce``,
``openfaas_pro``, ``knative_kpa``, ``ray_serve`` and ``static``, with the
window and ``rate()`` helpers they share in ``common``.  Nothing is imported
here, so that building a baseline does not import torch.
"""
