"""Every backbone family end to end: TURN (probe on cached features, then full fine-tuning) on tiny random models.

``CASES`` maps a case to how its backbone is named and which family (optimiser defaults)
it must resolve to. It must cover every registered backbone name, every family that has
paper optimiser defaults, and both name routes beyond the registry (``timm:`` and Hugging
Face directories) — ``test_cases_cover_every_backbone_name_family_and_route`` fails otherwise.
"""
from __future__ import annotations

import dataclasses
import importlib
import json

import pandas as pd
import pytest

from noisyft import api
from noisyft.backbones import BACKBONES, create_backbone

PER_CLASS, TEST_PER_CLASS = 6, 2
N_TRAIN = 3 * PER_CLASS
TINY = dict(method="turn", pretrained=False, image_size=32, batch_size=8, num_workers=0, progress=False,
            noise="symflip:0.3", seed=2, epochs_lp=1, epochs_fft=1)

_VIT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)


def _hf(kind: str):
    """A saved tiny random transformers model of ``kind`` (its directory is the backbone name)."""
    def build(root) -> str:
        import transformers as tf

        if kind == "vit":
            model = tf.ViTModel(tf.ViTConfig(**_VIT))
        elif kind == "vit_mae":
            model = tf.ViTMAEModel(tf.ViTMAEConfig(**_VIT))
        elif kind == "vit_msn":
            model = tf.ViTMSNModel(tf.ViTMSNConfig(**_VIT))
        elif kind == "convnext":
            model = tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32))
        elif kind == "resnet":
            model = tf.ResNetModel(tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
        else:
            model = tf.CLIPModel(tf.CLIPConfig(text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                                intermediate_size=64),
                                               vision_config=_VIT, projection_dim=16))
        path = root / kind
        model.save_pretrained(str(path))
        return f"hf:{path}"

    return build


def _named(name: str):
    return lambda root: name


# case → (builds the backbone name, family it must resolve to)
CASES: dict[str, tuple] = {
    "efficientnet_lite0": (_named("efficientnet_lite0"), "efficientnet"),
    "efficientnet_lite1": (_named("efficientnet_lite1"), "efficientnet"),
    "efficientnet_lite2": (_named("efficientnet_lite2"), "efficientnet"),
    "timm-efficientnet": (_named("test_efficientnet"), "efficientnet"),  # a bare timm name
    "timm-vit": (_named("timm:test_vit"), "vit"),
    "timm-convnext": (_named("timm:test_convnext"), "convnext"),
    "hf-vit": (_hf("vit"), "vit"),
    "hf-mae": (_hf("vit_mae"), "mae"),
    "hf-msn": (_hf("vit_msn"), "msn"),
    "hf-convnext": (_hf("convnext"), "convnext"),
    "hf-resnet": (_hf("resnet"), "resnet"),
    "hf-clip": (_hf("clip"), "clip"),
}


def _paper_families() -> set[str]:
    """The families that have their own optimiser defaults (wherever the table lives)."""
    for module in ("noisyft.backbones", "noisyft.backbones.base", "noisyft.config"):
        table = getattr(importlib.import_module(module), "PAPER_HPARAMS", None)
        if table is not None:
            return set(table)
    raise AssertionError("PAPER_HPARAMS not found: update _paper_families")


def test_cases_cover_every_backbone_name_family_and_route():
    names = {c for c in CASES if c in BACKBONES}
    assert set(BACKBONES.names()) <= names, f"add to CASES: {sorted(set(BACKBONES.names()) - names)}"
    families = {family for _, family in CASES.values()}
    assert _paper_families() <= families, f"no case for families {sorted(_paper_families() - families)}"
    assert {c.split("-")[0] for c in CASES if c not in BACKBONES} == {"timm", "hf"}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from tests.conftest import write_splits

    return write_splits(tmp_path_factory.mktemp("every-backbone") / "imgs", PER_CLASS, TEST_PER_CLASS)


@pytest.mark.parametrize("case", list(CASES))
def test_backbone_family_runs_turn_end_to_end(images, tmp_path, case):
    build, family = CASES[case]
    name = build(tmp_path)
    backbone = create_backbone(name, pretrained=False, image_size=32)
    assert backbone.family == family
    lp_default, fft_default = backbone.hparams
    res = api.fit(data=str(images), backbone=name, out=str(tmp_path / "run"), **TINY)
    d = res.run_dir
    optim = json.loads((d / "optim.json").read_text())  # the family's own optimiser defaults were used
    assert optim == {"lp": dataclasses.asdict(lp_default), "fft": dataclasses.asdict(fft_default)}
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [(m["phase"], m["epoch"]) for m in metrics] == [("lp", 1), ("fft", 1)]
    issues = pd.read_csv(d / "label_issues.csv")
    assert len(issues) == N_TRAIN and issues["label_quality"].between(0, 1).all()
    assert 0 <= res.summary["test_acc"] <= 1 and res.summary["backbone"] == name
    pred = api.predict(d, str(images / "test"), num_workers=0, progress=False)
    assert len(pred) == 3 * TEST_PER_CLASS and set(pred["predicted_class"]) <= {"red", "green", "blue"}
    assert pred["confidence"].between(1 / 3, 1).all()
