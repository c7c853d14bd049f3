"""Run a real Prometheus server (Debian's ``prometheus``) that scrapes the gateway.

The config is generated so that tests and the demo can use free ports and a
short scrape interval; nothing here re-implements Prometheus.

Without ``--web.enable-lifecycle`` (issue 18): with it, anyone who reaches the port could
``POST /-/quit`` and stop the plugin's eyes, or ``/-/reload`` at will.  Nothing here
reloads a running server; one that must (a changed ``<name>.yml``) gets SIGHUP, which
Prometheus always honours and only the process' owner may send.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from local_provider import services


def write_config(path: Path, targets: dict[str, list[str]], scrape_interval_s: float) -> Path:
    cfg = {
        "global": {"scrape_interval": f"{scrape_interval_s:g}s",
                   "evaluation_interval": f"{scrape_interval_s:g}s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": tg}]} for job, tg in targets.items()
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def binary() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        raise RuntimeError("prometheus not found: install Debian's package "
                           "(apt-get install prometheus) or run `make setup`")
    return exe


def start(state_dir: Path, port: int, targets: dict[str, list[str]],
          scrape_interval_s: float = 1.0, name: str = "prometheus",
          host: str = "127.0.0.1", timeout_s: float = 60.0) -> services.Service:
    """Start Prometheus in the background; returns once /-/ready answers."""
    state_dir = Path(state_dir)
    cfg = write_config(state_dir / f"{name}.yml", targets, scrape_interval_s)
    data = state_dir / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    cmd = [binary(), f"--config.file={cfg}", f"--storage.tsdb.path={data}",
           f"--web.listen-address={host}:{port}",
           "--storage.tsdb.retention.time=1d", "--log.level=warn"]
    svc = services.start(state_dir, name, cmd, url)
    if not services.wait_http(f"{url}/-/ready", timeout_s, lambda: services.pid_alive(svc.pid)):
        services.stop(state_dir, svc)
        raise RuntimeError(f"prometheus did not become ready on {url}; see {svc.log}")
    return svc
