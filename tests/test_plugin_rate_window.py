"""The plugin's rate window holds two scrapes, whatever its control period.

A window shorter than two scrape intervals reads no rate at all: with the OpenFaaS chart's
5 s scrape and QUART_CONTROL_PERIOD_S=1 the plugin saw every function idle.  The reader
asks a real Prometheus for its targets' scrape interval and widens the window.
"""
from __future__ import annotations

import pytest

from gateway_plugin.metrics_in import PrometheusReader, duration_s
from local_provider import prometheus, services


@pytest.mark.parametrize("text,seconds", [("5s", 5.0), ("1m30s", 90.0), ("500ms", 0.5),
                                          ("1h", 3600.0), ("2.5s", 2.5)])
def test_prometheus_durations(text, seconds):
    assert duration_s(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "s", "5x", "5s junk"])
def test_not_a_duration(bad):
    with pytest.raises(ValueError):
        duration_s(bad)


def test_the_window_is_widened_to_two_scrapes_of_a_real_prometheus(tmp_path, caplog):
    port = services.free_port()
    svc = prometheus.start(tmp_path, port, {"gateway": ["127.0.0.1:9"]}, 5.0)
    try:
        reader = PrometheusReader(f"http://127.0.0.1:{port}")
        assert reader.scrape_interval_s() == 5.0
        reader.read(2.0)  # a 1 s control period's window
        assert reader.last_window_s == 10.0
        assert "fewer than two scrapes" in caplog.text
        reader.read(12.0)  # long enough already: as asked
        assert reader.last_window_s == 12.0
    finally:
        services.stop(tmp_path, svc)


def test_without_an_answer_the_window_is_as_asked():
    reader = PrometheusReader(f"http://127.0.0.1:{services.free_port()}", timeout_s=0.5)
    assert reader.scrape_interval_s() is None
