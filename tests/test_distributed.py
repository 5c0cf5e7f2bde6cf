"""Data-parallel runs: ``torchrun --nproc_per_node 2`` over gloo on the CPU against one process.

What is bit-identical to one process: the feature cache entry, the per-sample losses of an eval
pass (the first selection's, from the features, and the one after a fine-tuning epoch, when a
2-process run resumes a 1-process checkpoint), and so the selections made from them. What is
within a tolerance: weights after DDP fine-tuning (gradients summed over ranks add in another
order: |Δw| ≤ 1e-5 after two epochs here, |Δloss| ≤ 1e-4) and the losses computed from them.
A 2-process run killed mid-fine-tuning resumes to the uninterrupted 2-process run's results,
bit for bit; a NaN on one rank stops both ranks with the same one-line error; only rank 0 writes
the run directory (an audit hook records every write of each rank).

The other data-parallel methods (one launch per world size fits each, tests/dist_methods.py): the
cached-feature ones give one process's results bit for bit; elr-fft and consensus keep per-sample
state (ELR's targets; the temporal ensemble, clean weights and flags) identical on both ranks and
within 1e-5 of one process, because the loss folds in the whole global batch (dist.global_rows).
The image-mode two-head methods (unicon-lp-img, dividemix-lp-img: each batch's frozen forwards split over the
ranks) came out bit for bit here and are held to the same tolerance; clip-label-match's zero-shot verdicts are
bit for bit; DEFT's detector (gradients summed over ranks) selects the same samples with clean probabilities
within 1e-4 (|Δ| ≈ 1e-6 here); both CLIP methods also evaluate a validation split smaller than one batch.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from noisyft import dist

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--method", "turn", "--backbone", "test_vit", "--no-pretrained", "--image-size", "32", "--epochs-lp", "2",
        "--epochs-fft", "2", "--batch-size", "16", "--num-workers", "0", "--no-progress", "--noise", "sym:0.4",
        "--seed", "7", "--augment", "none"]
WEIGHT_TOL, LOSS_TOL = 1e-5, 1e-4


def _fit(data: Path, out: Path, cache: Path, nproc: int = 1, kill_at: str | None = None, audit: Path | None = None,
         resume: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "NOISYFT_CACHE": str(cache), "NOISYFT_SHARD_ROWS": "32", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("NOISYFT_KILL_AT", None)
    if kill_at:
        env["NOISYFT_KILL_AT"] = kill_at
    target = ["-m", "noisyft"]
    if audit is not None:
        env.update(NOISYFT_TEST_AUDIT=str(audit), NOISYFT_TEST_WATCH=os.pathsep.join([str(out), str(cache)]))
        target = ["-m", "tests.dist_audit"]
    argv = ["fit", "--resume", str(out)] if resume else ["fit", "--data", str(data), "--out", str(out), *ARGS]
    if nproc == 1:
        cmd = [sys.executable, *target, *argv]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone", *target,
               *argv]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)


def _weights(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _selection(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "selection.jsonl").read_text().splitlines()]


def _features(cache: Path) -> dict:
    return {p.parent.name: p.read_bytes() for p in sorted(cache.rglob("features.npy"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 1-process run, one 1-process run killed after its first fine-tuning epoch, and an audited 2-process run."""
    from tests.conftest import write_tree

    base = tmp_path_factory.mktemp("dist")
    data = base / "imgs"
    write_tree(data, 24, seed=0, split="train")
    write_tree(data, 8, seed=1, split="test")
    one = _fit(data, base / "one", base / "cache1")
    assert one.returncode == 0, one.stderr
    two = _fit(data, base / "two", base / "cache2", nproc=2, audit=base / "audit")
    assert two.returncode == 0, two.stderr
    return data, base


def test_two_processes_match_one(runs):
    data, base = runs
    one, two = base / "one", base / "two"
    # the cache entries (train and test features) are the same files, byte for byte
    f1, f2 = _features(base / "cache1"), _features(base / "cache2")
    assert len(f1) == 2 and f1 == f2
    # the first selection (from the features) and its per-sample losses are bit-identical
    assert np.array_equal(np.load(one / "losses" / "epoch1.npy"), np.load(two / "losses" / "epoch1.npy"))
    assert _selection(one)[0] == _selection(two)[0]
    # DDP fine-tuning: within the stated tolerance of one process
    assert _max_diff(_weights(one), _weights(two)) <= WEIGHT_TOL
    for name in ("epoch2", "final"):
        assert np.abs(np.load(one / "losses" / f"{name}.npy") - np.load(two / "losses" / f"{name}.npy")).max() <= LOSS_TOL
    m1 = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [m["test_acc"] for m in m1] == [m["test_acc"] for m in m2]
    assert all(abs(a["train_loss"] - b["train_loss"]) <= LOSS_TOL for a, b in zip(m1, m2))
    # the world size is recorded, but is not part of the run's identity
    c1, c2 = json.loads((one / "config.json").read_text()), json.loads((two / "config.json").read_text())
    assert c2["launch"] == {"world_size": 2} and "launch" not in c1
    assert c1["identity"] == c2["identity"]


def test_only_rank_0_writes_the_run(runs):
    _, base = runs
    rank0 = json.loads((base / "audit.rank0").read_text())
    rank1 = json.loads((base / "audit.rank1").read_text())
    run = str(base / "two")
    assert any(path.startswith(run) and path.endswith("model.safetensors.tmp") or "model.safetensors" in path
               for _, path in rank0)
    assert [e for e in rank1 if e[1].startswith(run)] == []  # nothing in the run directory from rank 1
    # but rank 1 did its share of the feature extraction (shard 1 of 3 of the training images)
    cache = str(base / "cache2")
    assert any(path.startswith(cache) and "part-00001" in path for _, path in rank1)
    assert not any(path.startswith(cache) and "part-00001" in path for _, path in rank0)


def test_two_processes_resume_a_one_process_checkpoint_bit_identically(runs):
    """An eval pass split over 2 ranks and gathered by sample index gives the single process's losses, bit for bit."""
    data, base = runs
    out = base / "one-killed"
    killed = _fit(data, out, base / "cache1", kill_at="train:2:0")
    assert killed.returncode == -9
    assert json.loads((out / "progress.json").read_text()) == {"tag": "fft", "epoch": 1}
    # resumed by 2 processes, stopped at the first step of the next epoch: after its eval pass and selection
    resumed = _fit(data, out, base / "cache1", nproc=2, kill_at="train:2:0")
    assert resumed.returncode != 0 and "resuming" in resumed.stderr, resumed.stderr
    assert np.array_equal(np.load(out / "losses" / "epoch2.npy"), np.load(base / "one" / "losses" / "epoch2.npy"))
    assert _selection(out) == _selection(base / "one")


def test_killed_two_process_run_resumes_to_the_uninterrupted_result(runs):
    data, base = runs
    out = base / "two-killed"
    killed = _fit(data, out, base / "cache2", nproc=2, kill_at="train:2:1@1")  # rank 1 SIGKILLed in epoch 2
    assert killed.returncode != 0
    assert not (out / "summary.json").exists()
    assert json.loads((out / "progress.json").read_text()) == {"tag": "fft", "epoch": 1}
    resumed = _fit(data, out, base / "cache2", nproc=2, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    ref = base / "two"
    assert (out / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text()
    assert _selection(out) == _selection(ref)
    assert _max_diff(_weights(out), _weights(ref)) == 0.0
    pd.testing.assert_frame_equal(pd.read_csv(out / "label_issues.csv"), pd.read_csv(ref / "label_issues.csv"))


def test_nan_on_one_rank_stops_both_with_one_line(runs):
    data, base = runs
    out = base / "two-nan"
    r = _fit(data, out, base / "cache2", nproc=2, kill_at="nan:fine-tuning:1:1@1")
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert lines == ["error: fine-tuning: loss became nan at epoch 1, step 1; lower the learning rate "
                     "(the last good checkpoint is kept)"] * 2, r.stderr[-3000:]
    assert not (out / "summary.json").exists()


def test_a_user_error_on_rank_0_stops_both_ranks_with_its_line(runs):
    """Rank 0 alone checks the run folder; its one-line refusal reaches rank 1 (no hang, no second story)."""
    data, base = runs
    foreign = base / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = _fit(data, foreign, base / "cache2", nproc=2)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 2 and lines[0] == lines[1] and "is a folder that is not a noisyft run" in lines[0], r.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


# ---- the other data-parallel methods: one launch per world size fits each of them (tests/dist_methods.py) ----

NEW_METHODS = ["elr-fft", "consensus", "consensus-detect", "cleanlab", "cleanlab-fft", "small-loss-lp", "small-loss-fft",
               "unicon-lp", "dividemix-lp", "unicon-lp-img", "dividemix-lp-img", "clip-label-match", "deft"]
FEATURE_ONLY = {"consensus-detect", "cleanlab", "small-loss-lp", "unicon-lp", "dividemix-lp"}  # no image pass trains
# the detector's verdicts come from a frozen CLIP's eval pass, split at batch boundaries: bit for bit
EXACT_DETECTION = {"clip-label-match"}
# DEFT's detector trains with gradients summed over ranks: its selections are the same samples, but the final
# record's mean clean probability (and each sample's) is within the loss tolerance, not bit for bit
CLOSE_SELECTION = {"deft"}
IMAGE_VIEW_METHODS = {"unicon-lp-img", "dividemix-lp-img"}
CLIP_METHODS = {"deft", "clip-label-match"}  # also given a validation split (tests/dist_methods.py's CONFIG)


def _fit_methods(data: Path, out: Path, cache: Path, state: Path, nproc: int, clip: Path, audit: Path | None = None):
    env = {**os.environ, "NOISYFT_CACHE": str(cache), "NOISYFT_SHARD_ROWS": "32", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "NOISYFT_TEST_CLIP": str(clip)}
    env.pop("NOISYFT_KILL_AT", None)
    if audit is not None:
        env.update(NOISYFT_TEST_AUDIT=str(audit), NOISYFT_TEST_WATCH=str(out))
    launch = [] if nproc == 1 else ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone"]
    cmd = [sys.executable, *launch, "-m", "tests.dist_methods", str(data), str(out), str(state), ",".join(NEW_METHODS)]
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def method_runs(runs):
    """Every method of NEW_METHODS fitted by one process and by an audited 2-process launch (the features cached);
    DEFT's and clip-label-match's detector is a tiny random CLIP."""
    from tests.test_deft import make_tiny_clip

    data, base = runs
    clip = Path(make_tiny_clip(base / "tiny_clip"))
    _fit_methods(data, base / "m1", base / "cache1", base / "state1", 1, clip)
    _fit_methods(data, base / "m2", base / "cache2", base / "state2", 2, clip, audit=base / "maudit")
    return base


def _close_records(a: list[dict], b: list[dict], tol: float) -> bool:
    """The same records, keys and values, except that floats may differ by ``tol``."""
    def close(x, y):
        if isinstance(x, float) and isinstance(y, float):
            return abs(x - y) <= tol
        return type(x) is type(y) and x == y

    return len(a) == len(b) and all(r.keys() == q.keys() and all(close(r[k], q[k]) for k in r) for r, q in zip(a, b))


@pytest.mark.parametrize("method", NEW_METHODS)
def test_more_methods_on_two_processes_match_one(method_runs, method):
    """Selections and per-sample state (ELR's targets, consensus's temporal ensemble, flags and clean weights) of a
    2-process run match one process: identical on both ranks, within the stated tolerance of one process (bit for
    bit for the cached-feature methods); only rank 0 writes the run. The image-mode two-head methods and DEFT's
    detector, whose steps are not DDP's, are held to the same tolerance."""
    base = method_runs
    one, two = base / "m1" / method, base / "m2" / method
    from noisyft.methods import DATA_PARALLEL

    assert method in DATA_PARALLEL
    i1, i2 = (pd.read_csv(r / "label_issues.csv").sort_values("index").reset_index(drop=True) for r in (one, two))
    sel1, sel2 = (_selection(r) if (r / "selection.jsonl").exists() else [] for r in (one, two))
    if method in CLOSE_SELECTION:  # the same samples selected at every stage, the mean clean probability close
        assert [r["selected"] for r in sel1] == [r["selected"] for r in sel2] and len(sel1) == 3
        assert _close_records(sel1, sel2, LOSS_TOL)
    elif method in IMAGE_VIEW_METHODS:  # each rank's own batches through the backbone: the float thresholds may
        assert _close_records(sel1, sel2, LOSS_TOL)  # differ in the last bits (the CPU's kernels), the counts may not
    else:  # selections: from the features, or (small-loss-fft) from gathered losses after DDP epochs
        assert sel1 == sel2
    if method in ("unicon-lp-img", "dividemix-lp-img", "clip-label-match", "deft"):
        assert sel1 and all(r["selected"] > 0 for r in sel1)  # the selections ran and chose something
        # every epoch's record: the same accuracies (DEFT's and clip-label-match's on a validation split smaller
        # than one batch, which one rank evaluates none of), losses within the tolerance
        m1, m2 = ([json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (one, two))
        assert m1 and _close_records(m1, m2, LOSS_TOL)
        assert method not in CLIP_METHODS or all("val_acc" in m for m in m1 if m["phase"] == "fft")
    if method == "consensus-detect":  # its verdict's noise model was chosen on the validation split, by both
        assert any("verdict_noise_model" in r for r in sel1)  # (sel1 == sel2 above: the same choice and z)
    if method in EXACT_DETECTION:
        pd.testing.assert_series_equal(i1["label_quality"], i2["label_quality"], check_exact=True)
    if method in FEATURE_ONLY:
        assert _max_diff(_weights(one), _weights(two)) == 0.0
        pd.testing.assert_frame_equal(i1, i2, check_exact=True)
    else:
        assert _max_diff(_weights(one), _weights(two)) <= WEIGHT_TOL
        assert np.array_equal(i1["is_label_issue"], i2["is_label_issue"])
        assert np.abs(i1["label_quality"] - i2["label_quality"]).max() <= LOSS_TOL
    states = sorted((base / "state2").glob(f"{method}.rank*.npz"))
    if method in ("elr-fft", "consensus"):
        ref, s0, s1 = (np.load(p) for p in (base / "state1" / f"{method}.rank0.npz", *states))
        assert len(states) == 2 and ref.files == s0.files == s1.files
        for key in ref.files:
            assert np.array_equal(s0[key], s1[key]), key  # every rank holds the same state
            assert np.abs(ref[key].astype(np.float64) - s0[key].astype(np.float64)).max(initial=0) <= WEIGHT_TOL, key
        assert np.abs(s0["current" if method == "consensus" else "target"]).sum() > 0  # the state was filled
        if method == "consensus":
            # the relabelled samples are the same; w (a GMM posterior, saturated near 0 and 1) within the tolerance above
            assert np.array_equal(ref["flags"], s0["flags"]) and ref["flags"].any()
    rank1 = json.loads((base / "maudit.rank1").read_text())
    assert [e for e in rank1 if e[1].startswith(str(two))] == []
    assert any(e[1].startswith(str(two)) for e in json.loads((base / "maudit.rank0").read_text()))


# ---- in-process checks of the pieces (one process: the helpers are the identity, the sharding is pure) ----

def test_shards_cover_every_sample_once_at_batch_boundaries():
    for n in (0, 1, 15, 16, 17, 100, 1001):
        for w in (1, 2, 3, 8):
            parts = [dist.shard(n, align=16, r=r, w=w) for r in range(w)]
            assert np.array_equal(np.concatenate(parts), np.arange(n))
            assert all(len(p) == 0 or p[0] % 16 == 0 for p in parts)


def test_gather_by_index_alone_places_rows_and_refuses_gaps():
    vals, idx = np.array([10.0, 30.0, 20.0], dtype=np.float32), np.array([0, 2, 1])
    assert dist.gather_by_index(vals, idx, 3).tolist() == [10.0, 20.0, 30.0]
    with pytest.raises(ValueError):
        dist.gather_by_index(vals[:2], idx[:2], 3)
    assert dist.world_size() == 1 and dist.is_main() and dist.broadcast_object("x") == "x"
    assert dist.on_main(lambda: 5) == 5


def test_global_rows_alone_is_the_identity():
    """One process (inside a split batch or not): the loss's own rows, the very tensors (single runs unchanged)."""
    idx, p = torch.arange(3), torch.rand(3, 2)
    assert all(a is b for a, b in zip(dist.global_rows(idx, p), (idx, p)))
    with dist.split_batch(real=False):
        assert all(a is b for a, b in zip(dist.global_rows(idx, p), (idx, p)))


def test_all_rows_and_sum_grads_alone_are_the_identity():
    z, p = torch.rand(3, 2), torch.nn.Parameter(torch.ones(2))
    assert dist.all_rows(z)[0] is z
    p.grad = torch.full((2,), 0.5)
    dist.sum_grads([p])
    assert p.grad.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("warmup,real_noise", [(True, False), (True, True), (False, False), (False, True)])
def test_deft_loss_shares_of_a_split_batch_add_up_to_the_batch_loss(warmup, real_noise):
    """Each rank's share of DEFT's detector loss (global denominators, clean count of the whole batch) sums to the
    single process's loss, and so do the gradients: what summing the detector's gradients over ranks relies on."""
    from noisyft.methods.deft import clean_rule, detector_loss, detector_loss_share

    g = torch.Generator().manual_seed(0)
    labels, comp = torch.randint(0, 4, (10,), generator=g), torch.randint(0, 4, (10,), generator=g)
    pos0, neg0 = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    pos0[torch.arange(5), labels[:5]] += 3.0  # some samples clean, some not
    pos, neg = pos0.clone().requires_grad_(), neg0.clone().requires_grad_()
    full = detector_loss(pos, neg, labels, comp, warmup=warmup, real_noise=real_noise)
    full.total.backward()
    assert 0 < int(full.clean.sum()) < 10
    parts, grads = [], [torch.zeros(10, 4), torch.zeros(10, 4)]
    for lo, hi in ((0, 4), (4, 10)):
        p, n = pos0[lo:hi].clone().requires_grad_(), neg0[lo:hi].clone().requires_grad_()
        _, clean = clean_rule(p.detach(), n.detach(), labels[lo:hi], real_noise)
        share = detector_loss_share(p, n, labels[lo:hi], comp[lo:hi], clean, whole=10, n_clean=int(full.clean.sum()),
                                    warmup=warmup, real_noise=real_noise)
        share.backward()
        parts.append(share.item())
        grads[0][lo:hi], grads[1][lo:hi] = p.grad, n.grad
    assert abs(sum(parts) - full.total.item()) < 1e-5
    assert torch.allclose(grads[0], pos.grad, atol=1e-6) and torch.allclose(grads[1], neg.grad, atol=1e-6)


def test_epoch_batches_are_the_single_process_loader_batches(image_tree):
    """The DDP epoch's global batches are the ones train_image_epoch's single process draws."""
    from noisyft import engine
    from noisyft.losses import CE

    seen = []

    class Spy(CE):
        def forward(self, logits, targets, index=None):
            seen.append(index.tolist())
            return super().forward(logits, targets, index)

    from noisyft.data.base import LabeledSet
    from noisyft.data.inputs import open_images

    source = open_images(str(image_tree / "train"))
    labels = np.zeros(len(source), dtype=np.int64)
    data = LabeledSet(source, labels, ["a", "b", "c"])
    chosen = np.arange(0, len(source), 2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
    model(torch.zeros(1, 3, 8, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    import torchvision.transforms as T

    tf = T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor()])
    engine.train_image_epoch(model, data, chosen, tf, Spy(), opt, device=torch.device("cpu"),
                             gen=engine.generator(3, 4, 1), epoch=1, batch_size=7, num_workers=0, progress=False)
    expected = [chosen[b].tolist() for b in engine.epoch_batches(len(chosen), 7, engine.generator(3, 4, 1), False)]
    assert seen == expected


def test_precision_option_and_fused_adamw_plumbing():
    from noisyft.config import FitConfig, OptimConfig, fused_ok
    from noisyft.features.loader import use_bf16

    assert FitConfig().precision == "auto" and "precision" not in FitConfig().identity()  # old run identities kept
    assert FitConfig(precision="fp32").identity()["precision"] == "fp32"
    assert FitConfig().digest() != FitConfig(precision="bf16").digest()
    with pytest.raises(Exception, match="precision"):
        FitConfig(precision="fp16").validate()
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert use_bf16(cuda, "auto") and use_bf16(cuda, "bf16") and not use_bf16(cuda, "fp32")
    assert not use_bf16(cpu, "auto") and not use_bf16(cpu, "bf16")  # the CPU computes in fp32, as before
    p = torch.nn.Parameter(torch.zeros(2))
    assert not fused_ok([p])
    opt = OptimConfig("adamw").build([p])
    assert not opt.defaults.get("fused")  # CPU: the optimiser as before


def test_every_built_in_method_runs_data_parallel_and_others_are_refused_in_one_line():
    from noisyft.api import check_data_parallel
    from noisyft.errors import UserError
    from noisyft.methods import DATA_PARALLEL, METHODS

    assert set(METHODS.names()) == DATA_PARALLEL  # every built-in method
    assert set(NEW_METHODS) | {"turn"} <= DATA_PARALLEL
    check_data_parallel("deft", 2)
    with pytest.raises(UserError, match=r"^--method my-plugin: not supported with 2 processes") as e:
        check_data_parallel("my-plugin", 2)  # a method registered outside noisyft, not checked data-parallel
    assert "\n" not in str(e.value)
