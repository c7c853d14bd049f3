"""The local image store: what a deployment's ``image`` means on a machine without containers.

On OpenFaaS an image is built (``faas-cli build``), pushed, and the provider
pulls it by name.  Here an "image" is a folder pair on this machine: the
handler folder (``handler.py``) and the template folder (``index.py``), run with
a working directory (where relative paths such as ``QUART_MODEL_DIR`` start).
The provider resolves a FunctionDeployment to those folders, in this order:

1. annotation ``com.openfaas.quart.handler`` (absolute path; optional
   ``com.openfaas.quart.template`` and ``com.openfaas.quart.workdir``): explicit;
2. the image index ``<QUART_STATE_DIR>/images.json``, image name -> folders,
   written by ``quart-faas build -f stack.yml`` (and by ``quart-faas up``): the
   local equivalent of building and pushing the image;
3. faas-cli's own build output, ``<QUART_BUILD_DIR>/<service>/`` (default
   ``./build`` beside the provider's working directory), as written by
   ``faas-cli build --shrinkwrap`` or ``faas-cli up --shrinkwrap --skip-push``:
   the template's ``index.py`` with the handler copied into ``function/``.

A deployment that resolves nowhere is refused (400, field ``image``), so plain
``faas-cli deploy -f stack.yml`` works once the stack was built either way.
An index entry points at the folders (no copy): rebuilding re-points it, and
running replicas keep what they were started from until the next deploy.
"""
from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contracts.names import ANN_HANDLER, ANN_TEMPLATE, ANN_WORKDIR
from local_provider.types import ValidationError

INDEX_FILE = "images.json"


@dataclass(frozen=True)
class ImageSource:
    """Where a function's replicas come from; ``origin`` says how it was found."""

    handler_dir: Path
    template_dir: Path
    workdir: Path
    origin: str  # "annotation" | "index" | "shrinkwrap"

    def key(self) -> tuple[str, str, str]:
        """What a running replica depends on (the origin does not matter)."""
        return (str(self.handler_dir), str(self.template_dir), str(self.workdir))


def normalise(image: str) -> str:
    """``name`` and ``name:latest`` are one image, as for docker; digests and tags kept."""
    image = image.strip()
    last = image.rsplit("/", 1)[-1]
    return image if ("@" in last or ":" in last) else f"{image}:latest"


def index_path(state_dir: Path) -> Path:
    return Path(state_dir) / INDEX_FILE


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time (two `quart-faas build` runs must not lose entries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_index(state_dir: Path) -> dict[str, dict[str, Any]]:
    """image -> entry; a missing or unreadable index is empty (nothing was built)."""
    try:
        doc = json.loads(index_path(state_dir).read_text())
    except (OSError, ValueError):
        return {}
    images = doc.get("images") if isinstance(doc, dict) else None
    return {k: v for k, v in (images or {}).items() if isinstance(v, dict)}


def record(state_dir: Path, entries: Mapping[str, Mapping[str, str]]) -> Path:
    """Add or replace index entries (image -> {handler, template, workdir, ...}) atomically."""
    path = index_path(state_dir)
    with _locked(path):
        images = read_index(state_dir)
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        for image, entry in entries.items():
            images[normalise(image)] = {**entry, "built_at": now}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"images": images}, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return path


def _check(source: ImageSource, what: str) -> ImageSource:
    """The folders must exist now: a deployment accepted here would otherwise only time out."""
    needs = ((source.handler_dir, "handler.py"), (source.template_dir, "index.py"),
             (source.workdir, ""))
    for folder, needed in needs:
        try:
            ok = folder.is_dir() and (not needed or (folder / needed).is_file())
        except (OSError, ValueError):  # ValueError: a NUL byte in the path
            ok = False
        if not ok:
            raise ValidationError("image", f"{what}: {str(folder)!r} is not a folder"
                                  + (f" holding {needed}" if needed else "")
                                  + " on the provider's machine; build it again")
    return source


class ImageResolver:
    """Turns (service, image, annotations) into an ImageSource, or refuses with 400."""

    def __init__(self, state_dir: Path, build_dir: Path, default_template: Path) -> None:
        self.state_dir = Path(state_dir)
        self.build_dir = Path(build_dir)
        self.default_template = Path(default_template)

    def resolve(self, service: str, image: str, annotations: Mapping[str, str]) -> ImageSource:
        if ANN_HANDLER in annotations:
            return ImageSource(
                Path(annotations[ANN_HANDLER]),
                Path(annotations.get(ANN_TEMPLATE) or self.default_template),
                Path(annotations.get(ANN_WORKDIR) or os.getcwd()), "annotation")
        entry = read_index(self.state_dir).get(normalise(image))
        if entry is not None:
            try:
                src = ImageSource(Path(entry["handler"]), Path(entry["template"]),
                                  Path(entry["workdir"]), "index")
            except (KeyError, TypeError):
                raise ValidationError("image", f"{image!r}: broken entry in "
                                      f"{index_path(self.state_dir)}; build it again") from None
            return _check(src, f"{image!r} (from {index_path(self.state_dir)})")
        wrapped = (self.build_dir / service).absolute()
        if (wrapped / "index.py").is_file():
            src = ImageSource(wrapped / "function", wrapped, self.build_dir.absolute().parent,
                              "shrinkwrap")
            return _check(src, f"{service} (faas-cli build in {wrapped})")
        raise ValidationError(
            "image", f"{image!r} is not in the local image store: run `quart-faas build -f "
            f"stack.yml` (records it in {index_path(self.state_dir).absolute()}), or "
            f"`faas-cli build --shrinkwrap -f stack.yml` so that {wrapped} exists; replicas "
            "here are processes, not containers")


def entry_for(handler_dir: Path, template_dir: Path, workdir: Path, **extra: str) -> dict[str, str]:
    """An index entry with absolute folders."""
    src = ImageSource(Path(handler_dir).resolve(), Path(template_dir).resolve(),
                      Path(workdir).resolve(), "index")
    return {"handler": str(src.handler_dir), "template": str(src.template_dir),
            "workdir": str(src.workdir), **extra}


def describe(source: ImageSource) -> dict[str, str]:
    return {k: str(v) for k, v in asdict(source).items()}
