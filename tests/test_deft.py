"""DEFT and clip-label-match on tiny randomly initialised CLIPs (no weights are ever downloaded).

The helpers below build, fully offline, a Hugging Face CLIPModel directory with a
character-level CLIP tokenizer (vocab.json of the 256 byte symbols, each also with
the ``</w>`` end-of-word mark, plus the start/end tokens; no merges), and an
open_clip ``local-dir:`` model (open_clip ships its BPE vocabulary).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from noisyft.backbones.clip import load_clip, parse_clip_spec
from noisyft.config import FitConfig
from noisyft.data.base import LabeledSet
from noisyft.data.sources import ArraySource
from noisyft.data.transforms import train_transform
from noisyft.errors import UserError
from noisyft.methods.deft import (DualPromptSettings, class_names, clean_rule, detector_loss, negative_loss,
                                  train_detector_epoch)
from noisyft.methods.prompts import DualPromptDetector
from noisyft.methods.vpt import DeepVisualPrompts

TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=77)
VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
NAMES = ["red", "green", "blue"]


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + k) for k in range(len(extra))]


def write_tiny_tokenizer(path):
    """A character-level CLIP tokenizer saved to ``path`` (514 tokens: bytes, bytes</w>, start, end)."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"])}
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer.from_pretrained(str(path))
    tok.save_pretrained(str(path))
    return tok


def make_tiny_clip(path, seed: int = 0) -> str:
    """Save a randomly initialised CLIPModel (text + vision) and its tokenizer to ``path``."""
    import transformers as tf

    tok = write_tiny_tokenizer(path)
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = tf.CLIPModel(tf.CLIPConfig(text_config={**TEXT, **ids}, vision_config=VISION, projection_dim=16))
    model.save_pretrained(str(path))
    return str(path)


def make_tiny_open_clip(path, seed: int = 0) -> str:
    """An open_clip ``local-dir:`` model: config + random weights (the BPE vocabulary ships with open_clip)."""
    import open_clip

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path.mkdir(parents=True, exist_ok=True)
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg)
    torch.save(model.state_dict(), path / "open_clip_pytorch_model.bin")
    return f"open_clip:local-dir:{path}"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny_clip")


@pytest.fixture(scope="module")
def clip(clip_dir):
    return load_clip(clip_dir)


def tiny_set(n_per_class: int = 8, seed: int = 0) -> LabeledSet:
    rng = np.random.default_rng(seed)
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]])
    labels = np.repeat(np.arange(3), n_per_class)
    images = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 40, (len(labels), 32, 32, 3)), 0, 255)
    return LabeledSet(ArraySource(images.astype(np.uint8)), labels, list(NAMES))


def snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --- loading and encoding -------------------------------------------------------


def test_text_and_image_encoders_match_transformers(clip):
    texts = ["a photo of a red.", "green", "a blue thing, really."]
    inputs = clip.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = clip.model.get_text_features(**inputs).pooler_output
        torch.testing.assert_close(clip.encode_text(texts), ref, atol=1e-5, rtol=1e-5)
        px = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(clip.encode_image(px), clip.model.get_image_features(pixel_values=px).pooler_output)
    assert clip.preprocess.size == 32


def test_learnable_context_replaces_exactly_the_placeholder_embeddings(clip):
    """With the context set to the words' own embeddings, the prompt encodes exactly like the plain text."""
    from noisyft.methods.prompts import DualPromptLearner

    prefix = clip.words("a photo of a")
    learner = DualPromptLearner(clip, ["red"], n_ctx=len(prefix))
    with torch.no_grad():
        learner.pos_ctx.copy_(clip.token_embedding(torch.tensor(prefix)))
        emb = learner.embeddings(learner.pos_ctx)
        assert emb.shape[:2] == (1, 1 + len(prefix) + len(clip.words("red.")) + 1)
        pos, _ = learner(clip)
        plain = torch.nn.functional.normalize(clip.encode_text(["a photo of a red."]), dim=-1)
    torch.testing.assert_close(pos, plain, atol=1e-5, rtol=1e-5)


def test_offline_errors_name_the_weights_and_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"openai/clip-vit-base-patch16.*--extra clip="):
        load_clip("openai/clip-vit-base-patch16")
    with pytest.raises(UserError, match=r"checkpoint '/nowhere/x.bin' not found"):
        load_clip("open_clip:ViT-B-16:/nowhere/x.bin")
    (tmp_path / "no_tok").mkdir()
    with pytest.raises(UserError, match="cannot load a CLIPModel"):
        load_clip(str(tmp_path / "no_tok"))
    assert parse_clip_spec("open_clip:ViT-B-16:openai").pretrained == "openai"
    assert parse_clip_spec("open_clip:local-dir:/m").model == "local-dir:/m"
    assert parse_clip_spec("hf:/m/clip").kind == "hf"


def test_open_clip_local_dir_encodes_like_open_clip(tmp_path):
    import open_clip

    name = make_tiny_open_clip(tmp_path / "oc")
    oc = load_clip(name)
    texts = ["a photo of a red.", "blue"]
    with torch.no_grad():
        ref = oc.model.encode_text(oc.tokenizer(texts))
        torch.testing.assert_close(oc.encode_text(texts), ref, atol=1e-5, rtol=1e-5)
        px = torch.randn(2, 3, 32, 32)
        vpt = DeepVisualPrompts(2, 3, 32, 8)
        vpt.tokens.data.zero_()
        assert oc.encode_image(px, layers=vpt).shape == (2, 16)
        from noisyft.backbones.clip import run_layers

        torch.testing.assert_close(oc.encode_image(px, layers=run_layers), oc.model.encode_image(px))
    det = DualPromptDetector(oc, NAMES, n_ctx=4, peft="vpt", vpt_tokens=3)
    assert det(px).shape == (2, 3)
    with pytest.raises(UserError, match="LoRA on q/v needs a Hugging Face CLIP"):
        DualPromptDetector(oc, NAMES, n_ctx=4, peft="lora")
    assert torch.equal(oc.tokenizer(texts), open_clip.tokenize(texts))  # open_clip's own BPE tokenizer, 77 tokens


# --- the adapters -----------------------------------------------------------------


def test_vpt_deep_adds_exactly_the_configured_tokens_per_layer(clip):
    det = DualPromptDetector(clip, NAMES, n_ctx=4, peft="vpt", vpt_tokens=5)
    layers = clip.vision_tower.encoder.layers
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda m, args, i=i: seen.append((i, args[0].detach().clone())))
             for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            det.image_features(torch.randn(2, 3, 32, 32))
    finally:
        for h in hooks:
            h.remove()
    patches = (32 // 8) ** 2
    assert [i for i, _ in seen] == [0, 1]
    for i, h in seen:
        assert h.shape == (2, 1 + 5 + patches, 32)  # CLS + 5 prompts + patches at every layer
        torch.testing.assert_close(h[:, 1:6], det.vpt.tokens[i].expand(2, -1, -1))  # this layer's own tokens
    assert det.vpt.tokens.shape == (len(layers), 5, 32)


def test_lora_wraps_q_and_v_only(clip):
    from peft.tuners.lora import LoraLayer

    before = snapshot(clip)
    det = DualPromptDetector(clip, NAMES, n_ctx=4, peft="lora", lora_rank=2)
    wrapped = sorted(n for n, m in det.named_modules() if isinstance(m, LoraLayer))
    assert wrapped == sorted(f"tower.encoder.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj"))
    trainable = {n for n, p in det.named_parameters() if p.requires_grad}
    assert {n for n in trainable if "lora_" not in n} == {"prompts.pos_ctx", "prompts.neg_ctx"}
    assert len([n for n in trainable if "lora_" in n]) == 8  # A and B for q and v of two layers
    assert not any(isinstance(m, LoraLayer) for m in clip.modules())  # the CLIP itself is not modified
    assert all(torch.equal(before[k], v) for k, v in clip.state_dict().items())


# --- the rule and the loss ------------------------------------------------------------


def test_clean_rule_matches_its_definition():
    pos = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    neg = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    p, clean = clean_rule(pos, neg, labels)
    a, b = pos[range(4), labels], neg[range(4), labels]
    torch.testing.assert_close(p, torch.exp(a) / (torch.exp(a) + torch.exp(b)))
    assert clean.tolist() == [True, False, True, False]  # sample 3: p = 0.5 exactly is not > 0.5
    _, real = clean_rule(pos, neg, labels, real_noise=True)
    assert real.tolist() == [True, False, False, False]  # sample 2: argmax(pos) = 0 ≠ 1


def test_negative_side_trains_only_the_negative_prompts(clip):
    det = DualPromptDetector(clip, NAMES, n_ctx=4, peft="vpt", vpt_tokens=3)
    pos, neg = det.pair_logits(torch.randn(4, 3, 32, 32))
    labels, comp = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2])
    negative_loss(pos, neg, comp, labels).backward()
    grads = {n: p.grad for n, p in det.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert set(grads) == {"prompts.neg_ctx"}
    det.zero_grad(set_to_none=True)
    pos, neg = det.pair_logits(torch.randn(4, 3, 32, 32))
    torch.nn.functional.cross_entropy(pos, labels).backward()
    grads = {n for n, p in det.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == {"prompts.pos_ctx", "vpt.tokens"}


def test_loss_targets_before_and_after_warm_up():
    pos = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 4.0]], requires_grad=True)
    neg = torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0]], requires_grad=True)
    labels, comp = torch.tensor([0, 1]), torch.tensor([1, 0])
    warm = detector_loss(pos, neg, labels, comp, warmup=True)
    torch.testing.assert_close(warm.positive, torch.nn.functional.cross_entropy(pos, labels))
    torch.testing.assert_close(warm.negative, negative_loss(pos, neg, comp, labels))
    after = detector_loss(pos, neg, labels, comp, warmup=False)
    assert after.clean.tolist() == [True, False]
    torch.testing.assert_close(after.positive, torch.nn.functional.cross_entropy(pos[:1], labels[:1]))  # clean only
    torch.testing.assert_close(after.negative, negative_loss(pos, neg, comp, torch.tensor([0, 2])))  # noisy → argmax(pos)
    real = detector_loss(pos, neg, labels, comp, warmup=True, real_noise=True)
    from noisyft.losses import SCE

    torch.testing.assert_close(real.positive, SCE()(pos, labels))


@pytest.mark.parametrize("peft", ["vpt", "lora"])
def test_phase_one_changes_only_prompts_and_peft_and_keeps_clip_bit_identical(clip, peft):
    det = DualPromptDetector(clip, NAMES, n_ctx=4, peft=peft, vpt_tokens=3, lora_rank=2)
    clip_before, det_before = snapshot(clip), snapshot(det)
    trainable = {n for n, p in det.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD([p for p in det.parameters() if p.requires_grad], lr=0.03, momentum=0.9, weight_decay=5e-4)
    s = DualPromptSettings(detect_batch_size=8, detect_epochs=2, warmup=1)
    data = tiny_set()
    for epoch in (1, 2):  # warm-up epoch and one selecting epoch
        loss, seen, flags = train_detector_epoch(det, data, train_transform(clip.preprocess), opt, s=s, epoch=epoch,
                                                 seed=0, device=torch.device("cpu"), num_workers=0, progress=False)
        assert np.isfinite(loss) and sorted(seen) == list(range(len(data))) and flags.dtype == bool
    changed = {k for k, v in det.state_dict().items() if not torch.equal(v, det_before[k])}
    assert changed == trainable  # every trainable tensor moved, nothing else did
    assert all(torch.equal(clip_before[k], v) for k, v in clip.state_dict().items())


# --- settings -----------------------------------------------------------------------


def test_settings_defaults_and_errors(tmp_path, clip_dir):
    s = DualPromptSettings.from_config(FitConfig(method="deft"))
    assert (s.clip, s.peft, s.vpt_tokens, s.n_ctx, s.warmup, s.detect_epochs, s.epochs_fft_default(), s.lr,
            s.detect_batch_size) == ("openai/clip-vit-base-patch16", "vpt", 20, 16, 1, 10, 10, 0.03, 64)
    real = DualPromptSettings.from_config(FitConfig(extra={"real_noise": True}))
    assert (real.real_noise, real.warmup, real.epochs_fft_default()) == (True, 5, 5)
    assert DualPromptSettings.from_config(FitConfig(backbone=clip_dir)).clip == clip_dir  # the backbone's CLIP by default
    for bad in ({"peft": "adapter"}, {"vpt_tokens": "many"}, {"template": "no slot"}, {"real_noise": "maybe"},
                {"adapt_epochs": 2}, {"vpt_tokens": 0}):
        with pytest.raises(UserError):
            DualPromptSettings.from_config(FitConfig(extra=bad))
    f = tmp_path / "names.txt"
    f.write_text("a red thing\n\na green thing\n")
    with pytest.raises(UserError, match="2 names for 3 classes"):
        class_names(NAMES, str(f))
    f.write_text("x\ny\nz\n")
    assert class_names(NAMES, str(f)) == ["x", "y", "z"]
    assert class_names(["golden_retriever"]) == ["golden retriever"]


# --- end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from tests.conftest import write_splits

    return write_splits(tmp_path_factory.mktemp("deft-e2e") / "imgs", 16, 6)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_fit_deft_writes_every_output(images, clip_dir, tmp_path):
    from noisyft.cli import main

    out = tmp_path / "run"
    argv = ["fit", "--data", str(images), "--method", "deft", "--noise", "symflip:0.3", "--out", str(out),
            "--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32", "--batch-size", "16",
            "--num-workers", "0", "--no-progress", "--extra", f"clip={clip_dir}", "--extra", "detect_epochs=2",
            "--epochs-fft", "2", "--extra", "detect_batch_size=4", "--extra", "lr=0.3",
            "--extra", "n_ctx=4", "--extra", "vpt_tokens=4"]  # small batches, high lr: enough steps for a random CLIP
    clip_files = _digests(clip_dir)
    assert main(argv) == 0
    assert _digests(clip_dir) == clip_files  # the detector's CLIP is read, never written
    _assert_fine_tuned(out, _initial_backbone("test_efficientnet", pretrained=False, image_size=32))
    for name in ("config.json", "labels.csv", "noise.json", "metrics.jsonl", "selection.jsonl", "timings.json",
                 "model.safetensors", "summary.json", "label_issues.csv", "deft.json"):
        assert (out / name).exists(), name
    sel = _records(out / "selection.jsonl")
    assert [(r["stage"], r["epoch"]) for r in sel] == [("detect", 1), ("detect", 2), ("final", 3)]
    assert all({"precision", "recall", "f1", "selected"} <= set(r) for r in sel)
    metrics = _records(out / "metrics.jsonl")
    assert [(m["phase"], m["epoch"]) for m in metrics] == [("detect", 1), ("detect", 2), ("fft", 1), ("fft", 2)]
    assert "detector_test_acc" in metrics[0] and "test_acc" in metrics[-1]
    issues = pd.read_csv(out / "label_issues.csv")
    assert len(issues) == 48 and issues["label_quality"].between(0, 1).all()
    assert (issues["is_label_issue"] == (issues["label_quality"] <= 0.5)).all()  # the detector's own rule
    assert (~issues["is_label_issue"]).sum() == sel[-1]["selected"]
    summary = json.loads((out / "summary.json").read_text())
    assert {"test_acc", "fine_tuned", "detector", "selection", "detection"} <= set(summary)
    assert summary["detector"]["last_test_acc"] == metrics[1]["detector_test_acc"]  # the detector's numbers kept apart
    assert summary["test_acc"] == metrics[-1]["test_acc"] and summary["delivered_phase"] == "fft"
    assert {"detect", "selection", "fft"} <= set(summary["timings"])
    assert json.loads((out / "deft.json").read_text())["clip"] == clip_dir


def _digests(folder) -> dict:
    """sha256 of every file under ``folder`` (a model directory)."""
    import hashlib
    from pathlib import Path

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _initial_backbone(name: str, **kw) -> dict:
    """The backbone's weights as a run with seed 0 starts from them (fit seeds torch before building it)."""
    from noisyft.backbones import create_backbone

    torch.manual_seed(0)
    return snapshot(create_backbone(name, **kw))


def _assert_fine_tuned(run_dir, initial: dict) -> None:
    """Phase 2 moved every trained backbone weight of the saved model; BatchNorm statistics stayed (frozen)."""
    from safetensors.torch import load_file

    saved = {k.removeprefix("backbone."): v for k, v in load_file(str(run_dir / "model.safetensors")).items()
             if k.startswith("backbone.")}
    assert set(saved) == set(initial)
    stats = {k for k in initial if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    moved = {k for k in initial if not torch.equal(saved[k], initial[k])}
    weights = {k for k in initial if k not in stats and initial[k].is_floating_point()}
    assert moved & weights and len(moved & weights) >= 0.9 * len(weights)  # not just a head or one layer
    assert not moved & stats  # --freeze-bn-stats is the default
    change = sum((saved[k] - initial[k]).norm() ** 2 for k in weights) ** 0.5 / sum(initial[k].norm() ** 2 for k in weights) ** 0.5
    assert change < 0.1  # a small step from these very weights (another start would be ~100% away)


def test_clip_label_match_fine_tunes_the_clip_vision_tower(images, clip_dir, tmp_path):
    from noisyft import api

    clip_files = _digests(clip_dir)
    res = api.fit(data=str(images), method="clip-label-match", noise="symflip:0.3", backbone=clip_dir,
                  out=str(tmp_path / "run"), batch_size=16, num_workers=0, progress=False,
                  epochs_fft=1)
    sel = _records(res.run_dir / "selection.jsonl")
    assert [(r["stage"], r["epoch"]) for r in sel] == [("zero-shot", 1)]
    # phase 2 trained the CLIP's vision tower (a copy): the saved tower differs from the CLIP's, whose files are untouched
    _assert_fine_tuned(res.run_dir, _initial_backbone(clip_dir, pretrained=True))
    assert _digests(clip_dir) == clip_files
    assert json.loads((res.run_dir / "deft.json").read_text())["adapt_optim"] == {"name": "sgd", "lr": 5e-4,
                                                                                 "weight_decay": 5e-4, "momentum": 0.9}
    assert res.label_issues["label_quality"].between(0, 1).all()
