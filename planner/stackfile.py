"""Our own pipelines as planner input, and the plan back out as faas-cli placement constraints.

**In.**  Functions of a faas-cli ``stack.yml`` that carry the annotations
``com.openfaas.quart.pipeline``, ``com.openfaas.quart.stage`` and
``com.openfaas.quart.stages`` become models (one GPU -- here: one replica slot
-- each); each pipeline becomes a workflow ``stage-0 -> stage-1 -> ...``.  The
file is read as ``quart-faas up`` reads it, by ``contracts.stack.parse_text``
(faas-cli's ``${VAR}`` / ``${VAR:-default}`` expansion, then YAML); the stack
written back keeps the variables as written.  Functions without the
annotations are not planned and are left untouched.

**Out.**  ``emit_constraints`` adds to every planned function a faas-cli
``constraints:`` list, in the form faas-netes turns into a Kubernetes
nodeSelector (and faasd/Swarm read as ``key=value``)::

    constraints:
      - "kubernetes.io/hostname=server-0"

The text is edited in place -- comments, anchors, merge keys and every other
field stay byte-for-byte -- and the result is re-parsed and compared with the
input: only ``constraints`` may differ.  Should the in-place edit not verify
(an unusual layout, e.g. a flow-style ``functions: {...}``), the stack is
re-serialised from the parsed data instead (same content, comments lost).
A nodeSelector cannot say "server-0 or server-1": a function with replicas
planned on several servers is pinned to the server that ran most of its work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contracts.names import ANN_PIPELINE as ANNOTATION_PIPELINE
from contracts.names import ANN_STAGE as ANNOTATION_STAGE
from contracts.names import ANN_STAGES as ANNOTATION_STAGES
from contracts.stack import parse_text

from .spec import ModelSpec, NetworkSpec, NodeSpec, PlanInputError, SystemConfig, WorkflowSpec

__all__ = [
    "ANNOTATION_PIPELINE",
    "ANNOTATION_STAGE",
    "ANNOTATION_STAGES",
    "DEFAULT_STAGE_TIME_S",
    "StackPlanInput",
    "emit_constraints",
    "load_stack",
]

DEFAULT_STAGE_TIME_S = 0.05  # one MiniLM stage of 2 layers on one CPU: tens of ms
DEFAULT_STACK_NETWORK = NetworkSpec(intra_server_transfer_s=0.0005, inter_server_transfer_s=0.005)


@dataclass(frozen=True)
class StackPlanInput:
    config: SystemConfig
    data: dict[str, Any]  # the parsed stack, ${VAR} expanded
    text: str  # the stack as written
    unplanned: tuple[str, ...]  # functions without the pipeline annotations
    env: Mapping[str, str] | None = None  # what ${VAR} was expanded from (None: os.environ)


def _int_annotation(src: str, path: str, value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[+-]?\d+", text):
        raise PlanInputError(src, path, f"must be an integer, got {value!r}")
    return int(text)


def load_stack(path: Path, overrides: SystemConfig | None = None,
               env: Mapping[str, str] | None = None) -> StackPlanInput:
    """Pipelines of a stack.yml as a :class:`SystemConfig` (models = functions).

    ``overrides`` (a ``--config`` given with ``--stack``) may set timing and
    ``gpus_required`` of functions by name and the ``network`` section; its
    workflows are not used.  ``${VAR}`` expands from ``env`` (default: the
    process environment).
    """
    src = path.name
    text, data = _read(path, env)
    stages, counts, unplanned = _pipelines(src, data["functions"])
    config = _config(src, stages, counts, overrides)
    return StackPlanInput(config, data, text, tuple(unplanned), env)


def _read(path: Path, env: Mapping[str, str] | None) -> tuple[str, dict[str, Any]]:
    """The stack as written and as parsed (``${VAR}`` expanded); it must have functions."""
    src = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanInputError(str(path), "", "no such file") from None
    try:
        data = parse_text(text, env)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise PlanInputError(
            src, where, f"invalid YAML: {getattr(exc, 'problem', None) or exc}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("functions"), dict):
        raise PlanInputError(src, "functions", "must be a mapping of function name to function")
    return text, data


def _stage_of(src: str, name: object, fn: Any) -> tuple[str, int, int] | None:
    """(pipeline, stage, stages) from a function's annotations; None without the pipeline
    annotation (the function is not planned)."""
    fpath = f"functions.{name}"
    if not isinstance(fn, dict):
        raise PlanInputError(src, fpath, "must be a mapping")
    ann = fn.get("annotations") or {}
    if not isinstance(ann, dict):
        raise PlanInputError(src, f"{fpath}.annotations", "must be a mapping")
    if ANNOTATION_PIPELINE not in ann:
        return None
    apath = f"{fpath}.annotations.{ANNOTATION_PIPELINE}"
    pipeline = str(ann[ANNOTATION_PIPELINE]).strip()
    if not pipeline:
        raise PlanInputError(src, apath, "must not be empty")
    for key in (ANNOTATION_STAGE, ANNOTATION_STAGES):
        if key not in ann:
            raise PlanInputError(
                src,
                f"{fpath}.annotations.{key}",
                f"missing (the function has {ANNOTATION_PIPELINE})",
            )
    stage = _int_annotation(
        src, f"{fpath}.annotations.{ANNOTATION_STAGE}", ann[ANNOTATION_STAGE]
    )
    total = _int_annotation(
        src, f"{fpath}.annotations.{ANNOTATION_STAGES}", ann[ANNOTATION_STAGES]
    )
    if total < 1 or not 0 <= stage < total:
        raise PlanInputError(
            src,
            f"{fpath}.annotations.{ANNOTATION_STAGE}",
            f"stage {stage} is outside 0..{total - 1}",
        )
    return pipeline, stage, total


def _pipelines(
    src: str, functions: dict[Any, Any]
) -> tuple[dict[str, dict[int, str]], dict[str, int], list[str]]:
    """Per pipeline its functions by stage and its stage count; the unplanned functions.
    Every pipeline must have one function per stage, all agreeing on the count."""
    stages: dict[str, dict[int, str]] = {}
    counts: dict[str, int] = {}
    unplanned: list[str] = []
    for name, fn in functions.items():
        found = _stage_of(src, name, fn)
        if found is None:
            unplanned.append(str(name))
            continue
        pipeline, stage, total = found
        fpath = f"functions.{name}"
        if counts.setdefault(pipeline, total) != total:
            raise PlanInputError(
                src,
                f"{fpath}.annotations.{ANNOTATION_STAGES}",
                f"{total} disagrees with {counts[pipeline]} of other stages of {pipeline!r}",
            )
        other = stages.setdefault(pipeline, {}).get(stage)
        if other is not None:
            raise PlanInputError(
                src,
                f"{fpath}.annotations.{ANNOTATION_STAGE}",
                f"stage {stage} of {pipeline!r} is also function {other!r}",
            )
        stages[pipeline][stage] = str(name)
    if not stages:
        raise PlanInputError(
            src, "functions", f"no function carries the {ANNOTATION_PIPELINE} annotation"
        )
    for pipeline, by_stage in stages.items():
        missing = sorted(set(range(counts[pipeline])) - set(by_stage))
        if missing:
            raise PlanInputError(
                src, "functions", f"pipeline {pipeline!r} has no function for stage(s) {missing}"
            )
    return stages, counts, unplanned


def _config(src: str, stages: dict[str, dict[int, str]], counts: dict[str, int],
            overrides: SystemConfig | None) -> SystemConfig:
    """Functions as models (timed by ``overrides`` or ``DEFAULT_STAGE_TIME_S``), pipelines
    as chain workflows."""
    over = overrides.models if overrides else {}
    if overrides is not None:
        for m in over:
            if not any(m in s.values() for s in stages.values()):
                raise PlanInputError(
                    overrides.source, f"models.{m}", f"not a pipeline function of {src}"
                )
    models: dict[str, ModelSpec] = {}
    workflows: dict[str, WorkflowSpec] = {}
    for pipeline, by_stage in stages.items():
        names = [by_stage[k] for k in range(counts[pipeline])]
        for fn_name in names:
            spec = over.get(fn_name)
            if spec is None or not spec.has_timing:
                base = spec or ModelSpec(fn_name, name=fn_name)
                spec = ModelSpec(**{**base.__dict__, "inference_time_mean_s": DEFAULT_STAGE_TIME_S})
            models[fn_name] = spec
        nodes = tuple(NodeSpec(f"stage-{k}", fn_name) for k, fn_name in enumerate(names))
        edges = tuple((f"stage-{k}", f"stage-{k + 1}") for k in range(len(names) - 1))
        workflows[pipeline] = WorkflowSpec(pipeline, nodes, edges, name=f"pipeline {pipeline}")
    network = overrides.network if overrides is not None else DEFAULT_STACK_NETWORK
    return SystemConfig(models, workflows, network, src)


# --------------------------------------------------------------------------- output

_KEY = re.compile(r"^(\s*)([^\s#][^:]*?)\s*:(\s|$)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#")


def _key_of(line: str) -> str | None:
    m = _KEY.match(line)
    return m.group(2).strip("'\"") if m else None


def _edit_text(text: str, constraints: dict[str, list[str]]) -> str:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    top = next(
        (i for i, ln in enumerate(lines) if _indent(ln) == 0 and _key_of(ln) == "functions"), None
    )
    if top is None:
        raise ValueError("no block-style 'functions:' key")
    end = next(
        (i for i in range(top + 1, len(lines)) if _content(lines[i]) and _indent(lines[i]) == 0),
        len(lines),
    )
    body = [i for i in range(top + 1, end) if _content(lines[i])]
    if not body:
        raise ValueError("empty functions block")
    fn_indent = _indent(lines[body[0]])
    starts = [i for i in body if _indent(lines[i]) == fn_indent]
    out = lines[: top + 1]
    cursor = top + 1
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else end
        name = _key_of(lines[start])
        block = lines[start:stop]
        if name not in constraints:
            out += lines[cursor:stop]
            cursor = stop
            continue
        inner = [k for k in range(1, len(block)) if _content(block[k])]
        if not inner:
            raise ValueError(f"function {name!r} has no fields")
        field_indent = _indent(block[inner[0]])
        kept: list[str] = []
        k = 0
        while k < len(block):  # drop an existing constraints: entry
            ln = block[k]
            if k > 0 and _indent(ln) == field_indent and _key_of(ln) == "constraints":
                k += 1
                while k < len(block) and (
                    not _content(block[k])
                    or _indent(block[k]) > field_indent
                    or block[k].lstrip().startswith("- ")
                ):
                    if _content(block[k]) and _indent(block[k]) < field_indent:
                        break
                    k += 1
                continue
            kept.append(ln)
            k += 1
        last = max(k for k in range(len(kept)) if _content(kept[k]))
        pad = " " * field_indent
        new = [f"{pad}constraints:\n"] + [f'{pad}  - "{c}"\n' for c in constraints[name]]
        out += lines[cursor:start] + kept[: last + 1] + new + kept[last + 1 :]
        cursor = stop
    out += lines[cursor:]
    return "".join(out)


def _strip(fns: dict[str, Any]) -> dict[str, Any]:
    return {k: {f: v for f, v in fn.items() if f != "constraints"} for k, fn in fns.items()}


def emit_constraints(stack: StackPlanInput, constraints: dict[str, list[str]]) -> tuple[str, bool]:
    """The stack text with ``constraints`` set per function; and whether it was edited in place."""
    try:
        text = _edit_text(stack.text, constraints)
        again = parse_text(text, stack.env)
        same_rest = {k: v for k, v in again.items() if k != "functions"} == {
            k: v for k, v in stack.data.items() if k != "functions"
        }
        ok = (
            same_rest
            and _strip(again["functions"]) == _strip(stack.data["functions"])
            and all(again["functions"][f].get("constraints") == c for f, c in constraints.items())
        )
        if ok:
            return text, True
    except (ValueError, yaml.YAMLError, KeyError, AttributeError, TypeError):
        pass
    written = parse_text(stack.text, expand=False)  # keep ${VAR} as the user wrote it
    data = {**written, "functions": {k: dict(v) for k, v in written["functions"].items()}}
    for name, cons in constraints.items():
        data["functions"][name]["constraints"] = list(cons)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False), False
