"""faas-provider REST API of the local provider: real server process, real replicas."""
from __future__ import annotations

import pytest
from test_provider_helpers import ECHO, Server, deployment, pid_alive, start_server, wait_for

STATUS_FIELDS = {"name", "image", "namespace", "envProcess", "envVars", "constraints", "secrets",
                 "labels", "annotations", "limits", "requests", "readOnlyRootFilesystem",
                 "invocationCount", "replicas", "availableReplicas", "createdAt"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    s = start_server(tmp_path_factory.mktemp("api"))
    yield s
    pids = s.replica_pids()
    assert s.stop() == 0
    assert not [p for p in pids if pid_alive(p)], "replicas left behind after SIGTERM"


def test_healthz_info_namespaces(server: Server) -> None:
    assert server.session.get(server.gateway + "/healthz").status_code == 200
    assert server.session.get(server.provider + "/healthz").status_code == 200
    info = server.api("GET", "/system/info", base=server.provider).json()  # InfoResponse
    assert set(info) == {"provider", "orchestration", "version"}
    assert set(info["version"]) == {"sha", "release"}
    gw = server.api("GET", "/system/info").json()  # the gateway's GatewayInfo wraps it
    assert set(gw) == {"provider", "version", "arch"} and gw["provider"] == info
    assert set(gw["version"]) == {"sha", "release", "commit_message"}
    assert server.api("GET", "/system/namespaces").json() == ["openfaas-fn"]


def test_deploy_get_list_update_delete(server: Server) -> None:
    assert server.api("POST", "/system/secrets", json={"name": "s1", "value": "v"}).ok
    body = deployment("crud", env={"A": "1"}, labels={"team": "x"},
                      limits={"memory": "256Mi", "cpu": "1"}, requests={"cpu": "100m"},
                      constraints=["node=a"], secrets=["s1"], envProcess="python index.py",
                      namespace="openfaas-fn")
    r = server.api("POST", "/system/functions", json=body)
    assert r.status_code == 202, r.text
    r = server.api("POST", "/system/functions", json=body)
    assert r.status_code == 409 and "already exists" in r.json()["error"]

    f = server.wait_available("crud", 1)
    assert set(f) == STATUS_FIELDS
    assert f["name"] == "crud" and f["namespace"] == "openfaas-fn"
    assert f["image"] == body["image"] and f["envProcess"] == "python index.py"
    assert f["envVars"] == {"QUART_PRELOAD": "", "A": "1"}
    assert f["labels"] == {"team": "x"} and f["constraints"] == ["node=a"]
    assert f["secrets"] == ["s1"] and f["limits"] == {"memory": "256Mi", "cpu": "1"}
    assert f["requests"] == {"cpu": "100m"} and f["readOnlyRootFilesystem"] is False
    assert f["annotations"]["com.openfaas.quart.handler"] == str(ECHO)
    assert f["createdAt"].endswith("Z") and f["invocationCount"] == 0

    listed = server.api("GET", "/system/functions").json()
    assert [x["name"] for x in listed if x["name"] == "crud"] == ["crud"]
    assert all(set(x) == STATUS_FIELDS for x in listed)

    assert server.call("crud", data=b"hi").json()["body"] == "hi"
    assert wait_for(lambda: server.function("crud")["invocationCount"] == 1, 5)

    # Metadata-only update (labels, limits): same replica process keeps serving.
    pid = server.call("crud").json()["pid"]
    upd = dict(body, labels={"team": "y"}, limits={"cpu": "2"})
    assert server.api("PUT", "/system/functions", json=upd).status_code == 202
    f = server.function("crud")
    assert f["labels"] == {"team": "y"} and f["limits"] == {"cpu": "2"}
    assert f["createdAt"] == server.function("crud")["createdAt"]
    assert server.call("crud").json()["pid"] == pid

    # An env change rolls the replica: a new process, the function never unavailable.
    upd = dict(upd, envVars={"QUART_PRELOAD": "", "A": "2"})
    assert server.api("PUT", "/system/functions", json=upd).status_code == 202
    wait_for(lambda: server.call("crud").json()["pid"] != pid, 20, what="rolled replica")
    assert server.wait_available("crud", 1)["envVars"]["A"] == "2"

    r = server.api("DELETE", "/system/functions", json={"functionName": "crud",
                                                        "namespace": "openfaas-fn"})
    assert r.status_code == 202, r.text
    assert server.api("GET", "/system/function/crud").status_code == 404
    assert server.call("crud").status_code == 404
    r = server.api("DELETE", "/system/functions", json={"functionName": "crud"})
    assert r.status_code == 404 and "error" in r.json()


def test_put_unknown_is_404_then_post_deploys(server: Server) -> None:
    """faas-cli deploy: PUT, and POST when the PUT says 404."""
    body = deployment("fresh")
    r = server.api("PUT", "/system/functions", json=body)
    assert r.status_code == 404 and "fresh" in r.json()["error"]
    assert server.api("POST", "/system/functions", json=body).status_code == 202
    server.wait_available("fresh", 1)
    server.api("DELETE", "/system/functions", json={"functionName": "fresh"})


@pytest.mark.parametrize("body, field", [
    (b"{not json", "body"),
    (b"[]", "body"),
    (b"", "body"),
    ({"image": "x"}, "service"),
    ({"service": "Bad_Name", "image": "x"}, "service"),
    ({"service": "a" * 64, "image": "x"}, "service"),
    ({"service": "-lead", "image": "x"}, "service"),
    ({"service": "ok"}, "image"),
    ({"service": "ok", "image": 5}, "image"),
    ({"service": "ok", "image": "x", "envVars": {"A": 1}}, "envVars.A"),
    ({"service": "ok", "image": "x", "envVars": ["A"]}, "envVars"),
    ({"service": "ok", "image": "x", "labels": {"a": True}}, "labels.a"),
    ({"service": "ok", "image": "x", "annotations": "x"}, "annotations"),
    ({"service": "ok", "image": "x", "limits": {"cpu": 1}}, "limits.cpu"),
    ({"service": "ok", "image": "x", "limits": "1"}, "limits"),
    ({"service": "ok", "image": "x", "requests": {"gpu": "1"}}, "requests.gpu"),
    ({"service": "ok", "image": "x", "namespace": "other"}, "namespace"),
    ({"service": "ok", "image": "x", "secrets": "s"}, "secrets"),
    ({"service": "ok", "image": "x", "readOnlyRootFilesystem": "yes"}, "readOnlyRootFilesystem"),
    ({"service": "ok", "image": "not-built:1"}, "image"),
    ({"service": "ok", "image": "x", "secrets": ["never-created"]}, "secrets"),
])
def test_invalid_deployments_are_400_naming_the_field(server: Server, body, field: str) -> None:
    if isinstance(body, dict) and "annotations" not in body and field != "image":
        body = {**body, "annotations": {"com.openfaas.quart.handler": str(ECHO)}}
    before = server.api("GET", "/system/functions").json()
    for method in ("POST", "PUT"):
        kw = {"data": body} if isinstance(body, bytes) else {"json": body}
        r = server.api(method, "/system/functions", **kw)
        assert r.status_code == 400, (method, r.text)
        assert r.headers["Content-Type"] == "application/json"
        assert r.json()["error"].startswith(field + ":"), r.json()
    assert server.api("GET", "/system/functions").json() == before


def test_an_image_not_built_here_explains(server: Server) -> None:
    r = server.api("POST", "/system/functions", json={"service": "img", "image": "nginx"})
    assert r.status_code == 400
    msg = r.json()["error"]
    assert msg.startswith("image: 'nginx' is not in the local image store")
    assert "quart-faas build -f stack.yml" in msg and "faas-cli build --shrinkwrap" in msg


def test_scale_1_3_1_and_validation(server: Server) -> None:
    server.deploy("scaly", 1)
    r = server.api("POST", "/system/scale-function/scaly",
                   json={"serviceName": "scaly", "replicas": 3, "namespace": "openfaas-fn"})
    assert r.status_code == 202, r.text
    assert server.function("scaly")["replicas"] == 3
    server.wait_available("scaly", 3)
    wait_for(lambda: len(server.replica_pids()) == 3 + _others(server, "scaly"), 15,
             what="3 replica processes")

    for bad, field in [({"replicas": -1}, "replicas"), ({"replicas": 33}, "replicas"),
                       ({"replicas": "2"}, "replicas"), ({}, "replicas"),
                       ({"serviceName": "other", "replicas": 1}, "serviceName")]:
        r = server.api("POST", "/system/scale-function/scaly", json=bad)
        assert r.status_code == 400 and r.json()["error"].startswith(field), (bad, r.text)
    assert server.function("scaly")["replicas"] == 3
    r = server.api("POST", "/system/scale-function/nope", json={"replicas": 1})
    assert r.status_code == 404
    r = server.api("POST", "/system/scale-function/scaly?namespace=kube-system",
                   json={"replicas": 1})
    assert r.status_code == 400

    assert server.api("POST", "/system/scale-function/scaly",
                      json={"serviceName": "scaly", "replicas": 1}).status_code == 202
    server.wait_available("scaly", 1)
    wait_for(lambda: len(server.replica_pids()) == 1 + _others(server, "scaly"), 15,
             what="extra replica processes to exit")


def _others(server: Server, name: str) -> int:
    return sum(f["availableReplicas"] for f in server.api("GET", "/system/functions").json()
               if f["name"] != name)


def test_unknown_and_namespace_errors_are_json(server: Server) -> None:
    r = server.api("GET", "/system/function/ghost")
    assert r.status_code == 404 and r.json()["error"]
    r = server.api("GET", "/system/functions?namespace=other")
    assert r.status_code == 400 and "namespace" in r.json()["error"]
    r = server.api("GET", "/system/nowhere", base=server.provider)
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json"
    r = server.api("PATCH", "/system/functions", base=server.provider)
    assert r.status_code == 405 and "error" in r.json()
    r = server.session.get(server.gateway + "/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


def test_provider_routes_need_auth_too(server: Server) -> None:
    """Like faas-provider with basic_auth=true: the provider's /system/* is protected."""
    r = server.session.get(server.provider + "/system/functions")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="Restricted"'
    assert server.api("GET", "/system/functions", base=server.provider).status_code == 200
