"""Pods on one machine: a function container as faas-netes starts it, without a cluster.

A pod here is the real upstream ``fwatchdog`` (http mode) in front of the template's
``python index.py``, started in the image's working directory (the ``faas-cli build
--shrinkwrap`` layout) with the container's environment (the template's Dockerfile ENV,
then the function's ``environment`` from stack.yml), its secrets as files, and:

- its own network namespace (``ip netns``): the watchdog always binds :8080 and its
  metrics :8081, as in a pod, and index.py 127.0.0.1:5000. A veth pair joins it to the
  host on a private /30 per pod (local_provider/podnet.py), so the pod's IP is reachable
  from this machine only, and the pod reaches chosen loopback ports of this machine (the
  gateway: the next stage) at its host end;
- its own CPU cgroup (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), the pod's CPU
  limit: every process of the pod starts inside it, ``resize_cpu`` rewrites the quota in
  place (what the Pod ``resize`` subresource does on a node), and stopping the pod kills
  whatever is left in it, as the kubelet does with a container's cgroup.

Needs root (namespaces, cgroups), ``ip`` and ``nsenter``.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from local_provider.cpulimit import PERIOD_US
from local_provider.podnet import NETNS_DIR, LoopbackRelay, PodError, PodNet

log = logging.getLogger("local_provider.pods")
REPO = Path(__file__).resolve().parents[1]
POD_PORT = 8080
CONTROL_PORT = 8082  # the template's QUART_CONTROL_PORT default (quart_pod/config.py)
# The template's Dockerfile ENV (the ship stage); stack.yml's environment overrides it.
IMAGE_ENV = {"cgi_headers": "true", "mode": "http", "upstream_url": "http://127.0.0.1:5000",
             "QUART_LISTEN_HOST": "127.0.0.1", "QUART_LISTEN_PORT": "5000",
             "exec_timeout": "60s", "write_timeout": "60s", "read_timeout": "60s"}
# what the provider sets for its own replicas and a container never has
NOT_IN_A_CONTAINER = ("QUART_LISTEN_FD", "QUART_HANDLER_DIR", "QUART_ZYGOTE_SOCKET",
                      "QUART_WEIGHTS_PATH")


def watchdog_binary() -> Path:
    """$QUART_OPENFAAS_BIN/fwatchdog, else <repo>/../shared/openfaas/bin/fwatchdog."""
    folder = os.environ.get("QUART_OPENFAAS_BIN") or REPO.parent / "shared" / "openfaas" / "bin"
    exe = Path(folder) / "fwatchdog"
    if not os.access(exe, os.X_OK):
        raise PodError(f"no upstream fwatchdog at {exe}: set QUART_OPENFAAS_BIN to the folder "
                       "holding the OpenFaaS binaries")
    return exe


def shrinkwrap(template_dir: Path, handler_dir: Path, dest: Path) -> Path:
    """The image's /home/app as ``faas-cli build --shrinkwrap`` lays it out: the template's
    files, with the handler folder as ``function/``."""
    if dest.exists():
        shutil.rmtree(dest)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(template_dir, dest, ignore=skip)
    shutil.rmtree(dest / "function", ignore_errors=True)
    shutil.copytree(handler_dir, dest / "function", ignore=skip)
    return dest


def control_port(env: dict[str, str]) -> int | None:
    """The port of the pod's control endpoint (QUART_CONTROL_PORT, default 8082) when it
    runs in pod mode; None: none (pod mode off, the port turned off with 0, or a value
    the template refuses at start)."""
    if not (env.get("QUART_POD_WORKERS") or "").strip():
        return None
    try:
        port = int((env.get("QUART_CONTROL_PORT") or "").strip() or CONTROL_PORT)
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


class PodCgroups:
    """The parent cgroup of a runner's pods, and one child per pod."""

    def __init__(self, tag: str, root: Path = Path("/sys/fs/cgroup")) -> None:
        v2 = root / "cgroup.controllers"
        if v2.is_file() and "cpu" in v2.read_text().split() and os.access(root, os.W_OK):
            self.mode, parent = "v2", root
        elif os.access(root / "cpu", os.W_OK) and (root / "cpu" / "cpu.cfs_quota_us").exists():
            self.mode, parent = "v1", root / "cpu"
        else:
            raise PodError(f"no writable cgroup cpu controller under {root}: a pod's CPU limit "
                           "needs one (run as root with cgroup v2 cpu or v1 cpu)")
        self.base = parent / f"quart-pods-{tag}"
        self.base.mkdir(exist_ok=True)
        if self.mode == "v2":
            (self.base / "cgroup.subtree_control").write_text("+cpu")

    def make(self, name: str) -> Path:
        d = self.base / name
        if d.exists():
            self.kill(d)
            self.remove(d)
        d.mkdir()
        return d

    def set_quota(self, d: Path, millis: int | None) -> None:
        quota = -1 if millis is None else max(1000, millis * PERIOD_US // 1000)
        if self.mode == "v2":
            (d / "cpu.max").write_text(f"{'max' if quota < 0 else quota} {PERIOD_US}")
        else:
            (d / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (d / "cpu.cfs_quota_us").write_text(str(quota))

    def quota_millis(self, d: Path) -> int | None:
        if self.mode == "v2":
            q, p = (d / "cpu.max").read_text().split()
            return None if q == "max" else int(q) * 1000 // int(p)
        quota = int((d / "cpu.cfs_quota_us").read_text())
        return None if quota < 0 else quota * 1000 // int((d / "cpu.cfs_period_us").read_text())

    @staticmethod
    def procs(d: Path) -> list[int]:
        try:
            return [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill(self, d: Path) -> None:
        for pid in self.procs(d):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, d: Path, wait_s: float = 5.0) -> None:
        """rmdir, once the killed processes have left (EBUSY until then)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                d.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if time.monotonic() >= deadline:
                    log.warning("cgroup %s not removed: %s", d, e)
                    return
                self.kill(d)
                time.sleep(0.02)


@dataclass(frozen=True)
class PodSpec:
    """One pod: what faas-netes puts in the Deployment's pod template."""

    name: str
    app_dir: Path  # the image's working directory: index.py, quart_pod/, function/
    env: dict[str, str]  # the function's environment (stack.yml), over the image's ENV
    secrets: dict[str, bytes] = field(default_factory=dict)  # name -> content
    cpu_millis: int | None = None  # limits.cpu; None: no limit
    python: str = sys.executable  # fprocess "python index.py" with this python
    # loopback ports of this machine the pod reaches at its host-side address (a relay;
    # env values naming 127.0.0.1:PORT or localhost:PORT are rewritten to it)
    forward_ports: tuple[int, ...] = ()


class Pod:
    """A running pod; ``url`` is its watchdog (http://IP:8080)."""

    # readiness through the watchdog, as a probe sees it: the watchdog's own /_/health is
    # 200 before index.py listens; /_/ready reaches index.py (``ready_path``)
    health_path = "/_/ready"

    def __init__(self, spec: PodSpec, proc: subprocess.Popen[bytes], net: PodNet,
                 cgroups: PodCgroups, cgroup: Path, pod_dir: Path) -> None:
        self.spec, self.name = spec, spec.name
        self._proc, self.net, self._cgroups, self.cgroup = proc, net, cgroups, cgroup
        self.pod_dir, self.log = pod_dir, pod_dir / "pod.log"
        self.pid = proc.pid  # the watchdog: the container's PID 1
        self.ip, self.port = net.ip, POD_PORT
        self.url = f"http://{self.ip}:{self.port}"
        # /_/quart/* served by the pod's zygote, not queued behind the watchdog's calls
        ctl = control_port(spec.env)
        self.control_url = self.url if ctl is None else f"http://{self.ip}:{ctl}"
        self.info: dict[str, object] = {"tier": "pod", "ip": self.ip, "log": str(self.log),
                                        "netns": net.netns, "cgroup": str(cgroup)}
        self._stopped = False
        self.relays: list[LoopbackRelay] = []
        # told "starting", "ready", "gone" as the pod's state changes (the launcher's
        # pod directory; on a cluster, what the API server's pod status says)
        self.announce: Callable[[str], None] = lambda state: None
        self._announce_lock, self._gone = threading.Lock(), False

    def alive(self) -> bool:
        return self._proc.poll() is None

    def on_ready(self) -> None:
        """The readiness probe passed (the registry's): the pod is Ready."""
        self.set_state("ready")

    def on_draining(self) -> None:
        """The pod is being stopped: out of listings now, as a terminating pod is."""
        self.set_state("gone")

    def set_state(self, state: str) -> None:
        """In order, and nothing after "gone" (a late "ready" must not list a pod that a
        drain has already taken out)."""
        with self._announce_lock:
            if self._gone:
                return
            self._gone = state == "gone"
            try:
                self.announce(state)
            except OSError as e:
                log.warning("pod %s: state %s not published: %s", self.name, state, e)

    def returncode(self) -> int | None:
        return self._proc.poll()

    def pids(self) -> list[int]:
        """Every process of the pod (its cgroup's members)."""
        return self._cgroups.procs(self.cgroup)

    def resize_cpu(self, millis: int | None) -> None:
        """The pod's CPU limit in place (None: none), as the Pod ``resize`` subresource
        does on a node: the quota of the pod's cgroup changes, no process restarts."""
        if millis is not None and millis <= 0:
            raise ValueError(f"cpu millis must be > 0, got {millis}")
        self._cgroups.set_quota(self.cgroup, millis)
        self.info["cpu_millis"] = millis
        log.info("pod %s: cpu limit %s", self.name, "none" if millis is None else f"{millis}m")

    def cpu_millis(self) -> int | None:
        return self._cgroups.quota_millis(self.cgroup)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until the function answers through the watchdog (``/_/ready``, which the pod's
        ``ready_path`` sends to index.py's ``/_/health``), as a readiness probe does."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise PodError(f"pod {self.name} exited ({self.returncode()}); see {self.log}")
            try:
                if _HTTP.request("GET", self.url + self.health_path, timeout=1.0).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.02)
        raise PodError(f"pod {self.name} not ready after {timeout_s:g}s; see {self.log}")

    def terminate(self, grace_s: float) -> None:
        self.stop(grace_s)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to the watchdog (it passes it to index.py), everything left in the
        pod's cgroup killed after ``grace_s``, then the cgroup and the network removed."""
        if self._stopped:
            return
        self._stopped = True
        self.set_state("gone")
        if self.alive():
            self._proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        # of-watchdog drains for write_timeout after SIGTERM even when its function has
        # exited: once only the watchdog is left there is nothing to wait for
        while time.monotonic() < deadline and self.alive() and set(self.pids()) - {self.pid}:
            time.sleep(0.02)
        self._cgroups.kill(self.cgroup)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._cgroups.remove(self.cgroup)
        for r in self.relays:
            r.close()
        self.net.teardown()
        shutil.rmtree(self.pod_dir / "secrets", ignore_errors=True)
        shutil.rmtree(self.pod_dir / "tmp", ignore_errors=True)


_HTTP = urllib3.PoolManager(num_pools=64, maxsize=2, retries=False)


class PodRunner:
    """``start(spec) -> Pod``: the container runtime of a one-machine node."""

    def __init__(self, state_dir: Path, watchdog: Path | None = None,
                 cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
        if os.geteuid() != 0:
            raise PodError("pods need root (network namespaces and cgroups)")
        for tool in ("ip", "nsenter"):
            if shutil.which(tool) is None:
                raise PodError(f"pods need {tool!r} on PATH (iproute2, util-linux)")
        self.state_dir = Path(state_dir).absolute()
        self.watchdog = watchdog or watchdog_binary()
        self.cgroups = PodCgroups(f"{os.getpid()}-{id(self) & 0xffff:x}", cgroup_root)

    def start(self, spec: PodSpec) -> Pod:
        pod_dir = self.state_dir / "pods" / spec.name
        for sub in ("secrets", "tmp"):
            shutil.rmtree(pod_dir / sub, ignore_errors=True)
            (pod_dir / sub).mkdir(parents=True, mode=0o700)
        for name, content in spec.secrets.items():
            if "/" in name or name.startswith("."):
                raise PodError(f"bad secret name {name!r}")
            path = pod_dir / "secrets" / name
            path.write_bytes(content)
            path.chmod(0o400)
        net = PodNet.claim()
        cgroup, relays = None, []
        try:
            net.setup()
            relays = [LoopbackRelay(net.host_ip, port) for port in spec.forward_ports]
            cgroup = self.cgroups.make(spec.name)
            self.cgroups.set_quota(cgroup, spec.cpu_millis)
            proc = self._exec(spec, net, cgroup, pod_dir)
        except BaseException:
            if cgroup is not None:
                self.cgroups.remove(cgroup)
            for r in relays:
                r.close()
            net.teardown()
            raise
        pod = Pod(spec, proc, net, self.cgroups, cgroup, pod_dir)
        pod.relays = relays
        pod.info["cpu_millis"] = spec.cpu_millis
        log.info("pod %s started: %s (watchdog pid %d, netns %s)", spec.name, pod.url, pod.pid,
                 net.netns)
        return pod

    def _exec(self, spec: PodSpec, net: PodNet, cgroup: Path,
              pod_dir: Path) -> subprocess.Popen[bytes]:
        env = {**IMAGE_ENV, "fprocess": f"{spec.python} index.py", "ready_path": "/_/health",
               **spec.env}
        for k in NOT_IN_A_CONTAINER:
            env.pop(k, None)
        for port in spec.forward_ports:
            for k, v in env.items():
                for host in ("127.0.0.1", "localhost"):
                    v = v.replace(f"//{host}:{port}", f"//{net.host_ip}:{port}")
                env[k] = v
        env.update({"port": str(POD_PORT), "HOSTNAME": spec.name,
                    "TMPDIR": str(pod_dir / "tmp"),  # the watchdog's /tmp/.lock, per pod
                    "QUART_SECRETS_DIR": str(pod_dir / "secrets")})
        # join the cgroup first (its children inherit it), then the netns, then become the
        # watchdog: one pid from here on, as the container's PID 1
        script = 'echo $$ > "$0" && exec nsenter --net="$1" -- "$2"'
        argv = ["sh", "-c", script, str(cgroup / "cgroup.procs"), str(NETNS_DIR / net.netns),
                str(self.watchdog)]
        with open(pod_dir / "pod.log", "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} pod {spec.name} on "
                      f"{net.ip}\n".encode())
            out.flush()
            return subprocess.Popen(argv, cwd=spec.app_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def close(self) -> None:
        """Remove the parent cgroup (its pods must be stopped first)."""
        self.cgroups.remove(self.cgroups.base, wait_s=1.0)
