"""A run's saved model: what ``model.safetensors`` holds besides the weights, and loading it back.

The weights are safetensors (no pickle is ever loaded); the file's metadata says how to rebuild the
model (backbone name, input size, classes, preprocessing) and whether the backbone needed remote code.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

from noisyft.backbones import Backbone, Classifier, create_backbone
from noisyft.errors import UserError
from noisyft.run.files import MODEL


def model_meta(backbone_name: str, backbone: Backbone, classes: list[str], allow_remote_code: bool) -> dict:
    """The metadata saved with a run's weights (what :func:`load_model` rebuilds the model from)."""
    return {"backbone": backbone_name, "image_size": backbone.preprocess.size, "classes": classes,
            "allow_remote_code": allow_remote_code, "preprocess": backbone.preprocess.to_dict()}


def read_model_meta(weights: Path) -> dict:
    """The metadata of a saved model (JSON values); raises what safetensors/json raise for a damaged file."""
    with safe_open(str(weights), "pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def load_weights(path: str | Path) -> dict:
    """Weights saved by a run (safetensors only: no pickle is ever loaded)."""
    return load_file(str(path))


def load_model(run_dir: str | Path, *, allow_remote_code: bool = False) -> tuple[Classifier, dict]:
    """Rebuild a run's model from ``model.safetensors`` and its metadata (no pickle, no download).

    Remote model code (Hugging Face ``trust_remote_code``) runs only when the caller passes
    ``allow_remote_code=True``: the run folder's own metadata never grants it.
    """
    run_dir = Path(run_dir)
    weights = run_dir / MODEL
    if not weights.exists():
        raise UserError(f"{weights} not found: is {run_dir} a finished noisyft run?")
    try:
        meta = read_model_meta(weights)
        backbone_name, image_size, classes = meta["backbone"], meta["image_size"], meta["classes"]
    except Exception as e:
        raise UserError(f"{weights} is not a noisyft model ({type(e).__name__}: {e}); is the run folder damaged?") from None
    try:
        backbone = create_backbone(backbone_name, pretrained=False, image_size=image_size,
                                   allow_remote_code=allow_remote_code)
    except Exception as e:
        if meta.get("allow_remote_code") and not allow_remote_code:
            raise UserError(f"{run_dir}: backbone {backbone_name!r} was trained with its own Python code allowed and "
                            f"does not load without it; a run folder cannot grant that: pass --allow-remote-code on "
                            f"this command line if you trust it ({type(e).__name__}: {e})") from e
        raise
    model = Classifier(backbone, len(classes))
    model.load_state_dict(load_weights(weights))
    return model.eval(), meta
