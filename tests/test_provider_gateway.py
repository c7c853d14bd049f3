"""Gateway surface: basic auth, upstream metrics, and gateway/provider as separate processes."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from test_provider_helpers import (
    ECHO,
    Exposition,
    Server,
    parse_metrics,
    pid_alive,
    start_server,
    wait_for,
)

from local_provider.metrics import escape_label

FN = "counted.openfaas-fn"
BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    s = start_server(tmp_path_factory.mktemp("gateway"),
                     env={"QUART_QUEUE_SIZE": "1", "QUART_QUEUE_TIMEOUT_S": "0.5"})
    yield s
    pids = s.replica_pids()
    assert s.stop() == 0
    assert not [p for p in pids if pid_alive(p)], "replicas left behind after SIGTERM"


def test_basic_auth_on_system_only(server: Server) -> None:
    url = server.gateway + "/system/functions"
    r = requests.get(url)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="Restricted"'
    assert "error" in r.json()
    assert requests.get(url, auth=("admin", "wrong")).status_code == 401
    assert requests.get(url, auth=("root", server.auth[1])).status_code == 401
    assert requests.get(url, headers={"Authorization": "Basic !!!"}).status_code == 401
    assert requests.get(url, auth=server.auth).status_code == 200
    assert requests.post(server.gateway + "/system/scale-function/x",
                         json={"replicas": 1}).status_code == 401
    # Open like upstream: health and invocation (unknown function: 404, not 401).
    assert requests.get(server.gateway + "/healthz").status_code == 200
    assert requests.post(server.gateway + "/function/ghost").status_code == 404
    server.deploy("open", 1)
    assert requests.post(server.gateway + "/function/open", data=b"x").status_code == 200


def test_metrics_exact_names_labels_and_counts(server: Server) -> None:
    server.deploy("counted", 1, env={"max_inflight": "1"})
    sent = {"200": 7, "500": 3, "404": 2, "400": 1}

    def call(code: str) -> int:
        return server.call("counted", params={"status": code}).status_code

    with ThreadPoolExecutor(1) as ex:  # sequential: nothing queues
        got = list(ex.map(call, [c for c, n in sent.items() for _ in range(n)]))
    assert sorted(got) == sorted(int(c) for c, n in sent.items() for _ in range(n))
    # name.namespace is the same function; counted under the same label.
    assert server.call("counted.openfaas-fn").status_code == 200
    sent["200"] += 1
    # One slow call occupies the replica, one queues (queue size 1), the third -> 429,
    # the queued one -> 504 after 0.5 s.
    with ThreadPoolExecutor(3) as ex:
        slow = ex.submit(server.call, "counted", params={"sleep_ms": 1000})
        wait_for(lambda: _stats(server)["counted"]["inflight"] == 1, 5)
        queued = ex.submit(server.call, "counted")
        wait_for(lambda: _stats(server)["counted"]["queueDepth"] == 1, 5)
        full = server.call("counted")  # shed: the gateway says when to come back
        assert full.status_code == 429 and full.headers.get("Retry-After") == "1"
        assert queued.result().status_code == 504
        assert slow.result().status_code == 200
    sent["200"] += 1
    sent["429"], sent["504"] = 1, 1

    r = requests.get(server.metrics + "/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = parse_metrics(r.text)
    assert m.types == {
        "gateway_function_invocation_started": "counter",
        "gateway_function_invocation_total": "counter",
        "gateway_functions_seconds": "histogram",
        "gateway_service_count": "gauge",
        "quart_function_replicas_available": "gauge",
        "quart_function_inflight": "gauge",
        "quart_function_queue_depth": "gauge",
        "quart_function_replicas_desired": "gauge",
        "quart_function_rejected_total": "counter",
        "quart_replica_ejections_total": "counter",
        "quart_function_interarrival_seconds_count": "counter",
        "quart_function_interarrival_seconds_sum": "counter",
        "quart_function_interarrival_seconds_squares_sum": "counter",
        "quart_function_compute_seconds_count": "counter",
        "quart_function_compute_seconds_sum": "counter",
        "quart_function_compute_seconds_squares_sum": "counter",
    }
    # every call after the first one adds one gap
    assert m.value("quart_function_interarrival_seconds_count", function_name=FN) == \
        sum(sent.values()) - 1
    assert "gateway_function_invocation_started_total" not in r.text
    assert m.value("quart_replica_ejections_total", function_name=FN) == 0  # a slow call: not hung
    total = sum(sent.values())
    assert m.value("gateway_function_invocation_started", function_name=FN) == total
    for code, n in sent.items():
        assert m.value("gateway_function_invocation_total", function_name=FN, code=code) == n
        assert m.value("gateway_functions_seconds_count", function_name=FN, code=code) == n
        assert m.value("gateway_functions_seconds_bucket", function_name=FN, code=code,
                       le="+Inf") == n
        counts = [m.value("gateway_functions_seconds_bucket", function_name=FN, code=code, le=b)
                  for b in BUCKETS]
        assert counts == sorted(counts), "buckets must be cumulative"
    assert m.value("gateway_functions_seconds_bucket", function_name=FN, code="504",
                   le="0.25") == 0  # it waited 0.5 s
    assert m.value("gateway_functions_seconds_sum", function_name=FN, code="200") > 1.0
    codes = {dict(k[1])["code"] for k in m.samples
             if k[0] == "gateway_function_invocation_total" and dict(k[1])["function_name"] == FN}
    assert codes == set(sent)
    assert m.value("gateway_service_count", function_name=FN) == 1
    assert m.value("quart_function_replicas_desired", function_name=FN) == 1
    assert m.value("quart_function_inflight", function_name=FN) == 0
    assert m.value("quart_function_queue_depth", function_name=FN) == 0
    assert m.value("quart_function_rejected_total", function_name=FN, reason="queue_full") == 1
    assert m.value("quart_function_rejected_total", function_name=FN, reason="timeout") == 1
    # Unknown functions are answered (404) but never become a label.
    assert "ghost" not in r.text
    # The gateway port serves the same exposition, like upstream.
    assert "gateway_function_invocation_started{" in requests.get(server.gateway + "/metrics").text


def test_service_count_is_the_desired_count_as_upstream(server: Server) -> None:
    """Upstream's exporter sets gateway_service_count from the provider's function list:
    ``replicas`` (desired), not ``availableReplicas`` (openfaas/faas
    gateway/metrics/exporter.go, ``Set(float64(service.Replicas))``).  Ours says how many
    are ready in quart_function_replicas_available.  Old code: 0 while replicas started."""
    label = "gauged.openfaas-fn"
    env = {"QUART_PRELOAD": "slow_start", "PYTHONPATH": str(ECHO), "ECHO_START_DELAY_S": "3"}
    server.deploy("gauged", 2, env=env, wait=False)

    def scrape() -> Exposition:
        return parse_metrics(requests.get(server.metrics + "/metrics").text)

    m = scrape()
    assert server.function("gauged")["availableReplicas"] == 0  # still starting (3 s)
    assert m.value("gateway_service_count", function_name=label) == 2
    assert m.value("quart_function_replicas_available", function_name=label) == 0
    assert m.types["quart_function_replicas_available"] == "gauge"
    server.wait_available("gauged", 2)
    m = scrape()
    assert m.value("gateway_service_count", function_name=label) == 2
    assert m.value("quart_function_replicas_available", function_name=label) == 2
    server.api("POST", "/system/scale-function/gauged", json={"replicas": 0})
    m = scrape()  # at once: the desired count, while the replicas drain
    assert m.value("gateway_service_count", function_name=label) == 0
    assert m.value("quart_function_replicas_desired", function_name=label) == 0
    wait_for(lambda: scrape().value("quart_function_replicas_available",
                                    function_name=label) == 0, 10)


def test_label_escaping() -> None:
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_split_gateway_and_provider_processes(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The upstream layout: a gateway process in front of a provider process."""
    tmp = tmp_path_factory.mktemp("split")
    provider = start_server(tmp, role="provider", name="provider")
    gateway = None
    try:
        assert "gateway_url" not in provider.urls
        gateway = start_server(tmp, role="gateway", name="gateway",
                               args=["--provider-url", provider.provider])
        assert gateway.replica_pids() == []
        gateway.deploy("remote", 1)  # /system/* through the gateway, with auth
        assert requests.get(gateway.gateway + "/system/functions").status_code == 401
        r = gateway.call("remote", "/p?q=1", data=b"hello")
        assert r.status_code == 200 and r.json()["body"] == "hello"
        assert r.json()["path"] == "/p" and r.headers["X-Call-Id"]
        assert gateway.call("remote", params={"status": "503"}).status_code == 503
        assert gateway.call("ghost").status_code == 404
        m = parse_metrics(requests.get(gateway.metrics + "/metrics").text)
        label = "remote.openfaas-fn"
        assert m.value("gateway_function_invocation_started", function_name=label) == 2
        assert m.value("gateway_function_invocation_total", function_name=label, code="200") == 1
        assert m.value("gateway_function_invocation_total", function_name=label, code="503") == 1
        assert m.value("gateway_service_count", function_name=label) == 1
        assert provider.function("remote")["invocationCount"] == 2
        replica_pids = provider.replica_pids()
        assert len(replica_pids) == 1
        assert provider.stop() == 0
        provider = None  # the gateway alone: /system/* says so, and it serves on
        for path in ("/system/functions", "/system/info", "/system/scale-function/remote"):
            r = gateway.api("POST" if "scale" in path else "GET", path, json={"replicas": 1})
            assert r.status_code == 502, (path, r.status_code, r.text)
            assert "unreachable" in r.json()["error"]
        assert requests.get(gateway.gateway + "/healthz", timeout=10).status_code == 200
    finally:
        if gateway is not None:
            assert gateway.stop() == 0
        if provider is not None:
            assert provider.stop() == 0
    assert not pid_alive(replica_pids[0])


def _stats(server: Server) -> dict:
    return server.api("GET", "/system/quart/stats").json()
