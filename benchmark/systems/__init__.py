"""Compared autoscalers, each behind :class:`benchmark.systems.base.Autoscaler`."""
