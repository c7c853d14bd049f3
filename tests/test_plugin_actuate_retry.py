"""The plugin's gateway client retries what is safe to repeat, and only what is transient.

A gateway whose provider is restarting answers 502/503/504 for a moment; the calls the
plugin makes (list, scale to an absolute count, PUT a whole spec) are idempotent, so
they are retried with backoff.  A 4xx or a 401 is an answer, never retried; a 5xx that
outlives the retries is a ``GatewayError``.  Against tests/fake_faas_netes.py with faults
injected in front of it, counting what reached it.
"""
from __future__ import annotations

import socket

import pytest
from werkzeug.wrappers import Request, Response

from gateway_plugin.actuate import Gateway, GatewayError
from tests.fake_faas_netes import FakeFaasNetes

STAGE = {"image": "stage:1", "envVars": {"QUART_STAGE": "0"}, "replicas": 1,
         "labels": {"com.openfaas.scale.min": "1"}, "limits": {"cpu": "1"}}


class Flaky(FakeFaasNetes):
    """faas-netes behind a gateway that fails the first ``n`` calls of ``method``."""

    def __init__(self, method: str, n: int, status: int = 503) -> None:
        self.method, self.left, self.answer = method, n, status
        super().__init__({"fn": STAGE}, echo_env=True)

    def handle(self, request: Request) -> Response:
        if request.method == self.method and self.left > 0:
            self.left -= 1
            return Response("provider restarting", self.answer)
        return super().handle(request)


def _gw(url: str, retries: int = 3) -> Gateway:
    return Gateway(url, ("admin", "pw"), timeout_s=2, retries=retries, backoff_s=0.01)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_scale_is_retried_through_transient_gateway_errors(status: int) -> None:
    with Flaky("POST", 2, status) as gw:
        _gw(gw.url).scale("fn", 4)
        assert len(gw.calls("POST", "/system/scale-function/fn")) == 3
        assert gw.functions["fn"]["replicas"] == 4


def test_put_of_the_whole_spec_is_retried() -> None:
    with Flaky("PUT", 1) as gw:
        client = _gw(gw.url)
        (fn,) = client.functions()
        client.set_cpu(fn, 2.0)
        assert len(gw.calls("PUT", "/system/functions")) == 2
        assert gw.functions["fn"]["limits"]["cpu"] == "2000m"
        assert gw.functions["fn"]["envVars"] == STAGE["envVars"]


def test_a_5xx_that_outlives_the_retries_is_an_error_after_retries_plus_one_calls() -> None:
    with Flaky("GET", 99) as gw:
        with pytest.raises(GatewayError, match="503"):
            _gw(gw.url, retries=2).functions()
        assert len(gw.calls("GET", "/system/functions")) == 3


@pytest.mark.parametrize("status", [500, 400, 404, 401])
def test_other_answers_are_final(status: int) -> None:
    """A 500 is a bug on the other side and a 4xx an answer: one call each."""
    with Flaky("POST", 99, status) as gw:
        with pytest.raises(GatewayError):
            _gw(gw.url).scale("fn", 2)
        assert len(gw.calls("POST")) == 1
        assert gw.functions["fn"]["replicas"] == 1


def test_unknown_function_is_a_404_error_without_retry() -> None:
    with Flaky("POST", 0) as gw:
        with pytest.raises(GatewayError, match="404"):
            _gw(gw.url).scale("ghost", 2)
        assert len(gw.calls("POST")) == 1


def test_a_gateway_that_is_not_listening_is_a_gateway_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        with pytest.raises(GatewayError, match="failed after 3 attempts"):
            _gw(f"http://127.0.0.1:{port}", retries=2).functions()
