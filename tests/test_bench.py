"""noisyft bench: grid parsing, per-cell locks, resume (finished cells never rerun), results and plots."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from noisyft import api
from noisyft.bench.grid import QUICK, BenchSpec, Cell, CellLock, cell_dir, load_spec, run_cell
from noisyft.bench.runner import run_bench
from noisyft.cli import main
from noisyft.errors import UserError

COMMON = dict(pretrained=False, image_size=32, epochs_lp=3, epochs_fft=1, batch_size=16, num_workers=0,
              lp_optim="adamw:1e-2:1e-5", extra={"warmup": 1})


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.conftest import write_splits

    return write_splits(tmp_path_factory.mktemp("bench") / "imgs", 12, 4)


def _spec(data, methods=("ce-lp", "small-loss-lp")) -> BenchSpec:
    return BenchSpec.from_dict({"data": str(data), "noises": ["symflip:0.3"], "backbones": ["test_efficientnet"],
                                "methods": list(methods), "seeds": [0], **COMMON})


# ---------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------


def test_spec_expands_the_grid_and_names_cells_safely(tmp_path):
    spec = BenchSpec.from_dict({"data": ["demo", "/x/y z"], "noises": ["sym:0.6", None], "backbones": "test_vit",
                                "methods": ["turn", "ce-lp"], "seeds": [0, 1], "image_size": 64})
    cells = spec.cells()
    assert len(cells) == 2 * 2 * 1 * 2 * 2 and len({c.name for c in cells}) == len(cells)
    assert all(set(c.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") for c in cells)
    cfg = spec.fit_config(cells[0], tmp_path)
    assert (cfg.method, cfg.noise, cfg.seed, cfg.image_size) == ("turn", "sym:0.6", 0, 64)
    assert cfg.out == str(tmp_path / "cells" / cells[0].name) and cfg.progress is False
    assert spec.fit_config(Cell("demo", None, "test_vit", "ce-lp", 1), tmp_path).noise is None


def test_per_method_grid_keys_restrict_that_method_only(tmp_path):
    spec = BenchSpec.from_dict({"data": "demo", "noises": ["sym:0.6", "sym:0.9"], "backbones": "b", "seeds": [0, 1],
                                "methods": ["turn", "dividemix-lp-img"], "image_size": 64,
                                "per_method": {"dividemix-lp-img": {"noises": "sym:0.6", "seeds": [0], "epochs_lp": 7}}})
    cells = spec.cells()
    assert sorted((c.method, c.noise, c.seed) for c in cells) == [
        ("dividemix-lp-img", "sym:0.6", 0), ("turn", "sym:0.6", 0), ("turn", "sym:0.6", 1),
        ("turn", "sym:0.9", 0), ("turn", "sym:0.9", 1)]
    img = next(c for c in cells if c.method == "dividemix-lp-img")
    assert spec.fit_config(img, tmp_path).epochs_lp == 7  # its other keys stay per-method settings
    with pytest.raises(UserError, match=r"per_method.turn.noises names asym:0.4"):
        BenchSpec.from_dict({**spec.to_dict(), "per_method": {"turn": {"noises": ["asym:0.4"]}}})


@pytest.mark.parametrize("bad, match", [
    ({"methods": ["dividemix"]}, "unknown method"),
    ({"image_sise": 64}, "image_size"),
    ({"method": "turn"}, "set by the grid"),
])
def test_spec_errors_are_one_line_user_errors(bad, match):
    base = {"data": "demo", "noises": ["sym:0.6"], "backbones": ["x"], "methods": ["turn"], "seeds": [0]}
    with pytest.raises(UserError, match=match):
        BenchSpec.from_dict({**base, **bad})
    with pytest.raises(UserError, match="missing key"):
        BenchSpec.from_dict({"data": "demo"})


def test_quick_grid_is_valid_and_covers_every_family():
    spec = BenchSpec.from_dict(QUICK)
    assert spec.data == ["demo"] and spec.backbones == ["efficientnet_lite0"] and spec.common["image_size"] == 64
    assert {"turn", "ce-lp", "ce-fft", "gce-lp", "small-loss-lp", "dividemix-lp", "unicon-lp", "cleanlab"} == set(spec.methods)


def test_load_spec_reads_yaml(tmp_path):
    f = tmp_path / "grid.yaml"
    f.write_text(yaml.safe_dump({"data": "demo", "noises": ["sym:0.6"], "backbones": ["b"], "methods": ["ce-lp"],
                                 "seeds": 0, "max-train": 100}))
    spec = load_spec(f)
    assert spec.seeds == [0] and spec.common == {"max_train": 100}
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------
# locks
# ---------------------------------------------------------------------------


def test_lock_is_exclusive_and_released(tmp_path):
    a, b = CellLock(tmp_path / "c.lock"), CellLock(tmp_path / "c.lock")
    assert a.acquire() and not b.acquire()  # held by a live process (this one)
    assert json.loads((tmp_path / "c.lock").read_text())["pid"] == os.getpid()
    a.release()
    assert not (tmp_path / "c.lock").exists() and b.acquire()
    b.release()


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    path = tmp_path / "c.lock"
    path.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    lock = CellLock(path)
    assert lock.acquire() and json.loads(path.read_text())["pid"] == os.getpid()
    assert not list(tmp_path.glob("*.stale-*"))
    lock.release()


@pytest.mark.parametrize("content", [
    json.dumps({"pid": os.getppid(), "host": socket.gethostname()}),  # live process
    json.dumps({"pid": 1, "host": "another-host"}),  # cannot check a pid on another host
    "{half-written",
])
def test_live_foreign_or_unreadable_locks_are_respected(tmp_path, content):
    path = tmp_path / "c.lock"
    path.write_text(content)
    assert not CellLock(path).acquire() and path.read_text() == content


def test_busy_cell_is_skipped_and_failed_cell_does_not_stop_the_grid(tmp_path):
    spec = BenchSpec.from_dict({"data": "demo", "noises": ["sym:0.6"], "backbones": ["b"], "methods": ["ce-lp", "turn"],
                                "seeds": [0]})
    busy, failing = spec.cells()
    lock = CellLock(tmp_path / "locks" / f"{busy.name}.lock")
    assert lock.acquire()
    calls = []

    def fit(cfg):
        calls.append(cfg.method)
        raise RuntimeError("boom")

    assert run_cell(spec, busy, tmp_path, fit) == "busy" and calls == []
    assert run_cell(spec, failing, tmp_path, fit) == "failed" and calls == ["turn"]
    assert "boom" in (cell_dir(tmp_path, failing) / "error.txt").read_text()
    assert not (tmp_path / "locks" / f"{failing.name}.lock").exists()  # released after the failure
    res = run_bench(spec, tmp_path, fit=fit, plots=False, echo=lambda s: None)
    assert {r["method"]: r["status"] for r in res["cells"]} == {"ce-lp": "running", "turn": "failed"}
    md = (tmp_path / "results.md").read_text()
    assert "failed" in md and "boom" in md
    lock.release()


# ---------------------------------------------------------------------------
# a real tiny grid: resume, results, plots, CLI
# ---------------------------------------------------------------------------


def test_interrupted_grid_continues_without_rerunning_finished_cells(tiny_data, tmp_path):
    spec = _spec(tiny_data)
    done_cell, killed_cell = spec.cells()
    api.fit(spec.fit_config(done_cell, tmp_path))  # finished before the "kill"
    summary = cell_dir(tmp_path, done_cell) / "summary.json"
    before = (summary.stat().st_mtime_ns, summary.read_text())
    lock = tmp_path / "locks" / f"{killed_cell.name}.lock"  # the killed process's lock is left behind
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))

    calls = []

    def counting_fit(cfg):
        calls.append(cfg.method)
        return api.fit(cfg)

    res = run_bench(spec, tmp_path, fit=counting_fit, echo=lambda s: None)
    assert calls == ["small-loss-lp"]  # only the unfinished cell ran
    assert (summary.stat().st_mtime_ns, summary.read_text()) == before
    assert not lock.exists() and res["counts"]["done"] == 2
    again = run_bench(spec, tmp_path, fit=counting_fit, echo=lambda s: None)
    assert calls == ["small-loss-lp"] and again["counts"]["done"] == 2  # nothing reruns

    rows = {r["method"]: r for r in res["cells"]}
    for cell in spec.cells():  # each row carries its own run's numbers (both methods are probes: last ≤ best)
        r = rows[cell.method]
        lp = [m["test_acc"] for m in map(json.loads, (cell_dir(tmp_path, cell) / "metrics.jsonl").read_text().splitlines())]
        assert (r["last_test_acc"], r["probe_best_test_acc"]) == (lp[-1], max(lp)) and r["time_train"] > 0
        assert r["auroc"] == json.loads((cell_dir(tmp_path, cell) / "summary.json").read_text())["detection"]["auroc"]
        assert r["test_acc"] == r["last_test_acc"] and r["test_acc_rule"] == "last epoch"  # no validation split
        assert r["noise_true"] == r["realised_noise"] and 0 <= r["noise_est"] <= 1  # the noise rate, from summary.json
    assert rows["ce-lp"]["selection"] == {} and rows["small-loss-lp"]["selection"]["epoch"] == 3
    assert [p["epoch"] for p in rows["small-loss-lp"]["selection_curve"]] == [2, 3]
    md = (tmp_path / "results.md").read_text()
    assert "symflip:0.3 acc (last epoch)" in md and "| ce-lp |" in md and "| small-loss-lp |" in md
    ce = next(l for l in md.splitlines() if l.startswith("| ce-lp |")).split("|")
    assert ce[2].strip().strip("*") == f"{100 * rows['ce-lp']['test_acc']:.2f}"
    assert ce[4].strip() == f"{100 * rows['ce-lp']['probe_best_test_acc']:.2f}" and ce[3].strip() == "—"  # no FFT phase
    assert f"| ce-lp | {100 * rows['ce-lp']['noise_est']:.2f} / " in md  # the noise-rate table: estimate / CJ (true)
    assert f"({100 * rows['ce-lp']['noise_true']:.2f}) |" in md
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["status"] for r in saved["cells"]] == ["done", "done"] and len(saved["table"]) == 2
    assert saved["cells"][0]["noise_rate"]["true"]["overall"] == rows[saved["cells"][0]["method"]]["noise_true"]
    for png in ("accuracy_vs_time.png", "selection.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_marks_cells_outside_the_grid_and_a_subsample_s_clean_set():
    from noisyft.bench.results import aggregate, results_markdown

    spec = BenchSpec.from_dict({"data": "d", "noises": ["sym:0.6", "sym:0.9"], "backbones": "b", "seeds": [0],
                                "methods": ["turn", "unicon-lp-img"], "per_method": {"unicon-lp-img": {"noises": ["sym:0.6"]}}})
    done = dict(status="done", test_acc=0.4, last_test_acc=0.4, time_train=12.0, auroc=0.8, precision_at_k=None)
    sel = {"turn": {"precision": 0.8, "recall": 0.4, "f1": 0.533, "clean_set_f1": 0.8},
           "unicon-lp-img": {"precision": 0.7, "recall": 0.7, "f1": 0.7, "clean_set_f1": 0.7}}
    rows = [{"cell": c.name, **vars(c), **done, "selection": sel[c.method]} for c in spec.cells()]
    md = results_markdown({"spec": spec.to_dict(), "cells": rows, "table": aggregate(rows),
                           "counts": {"done": len(rows), "failed": 0, "running": 0, "pending": 0}})
    turn = next(l for l in md.splitlines() if l.startswith("| turn |"))
    unicon = next(l for l in md.splitlines() if l.startswith("| unicon-lp-img |"))
    assert turn.count("0.800 / 0.400 / 0.533 (clean set F1 0.800)") == 2
    assert "0.700 / 0.700 / 0.700 |" in unicon and "clean set" not in unicon
    assert unicon.split("|")[9].strip() == "not in grid"  # its sym:0.9 column group


def test_cli_bench(tiny_data, tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"data": str(tiny_data), "noises": ["symflip:0.3"], "backbones": ["test_efficientnet"],
                                    "methods": ["ce-lp"], "seeds": [0], **COMMON, "extra": {}}))  # ce-lp has no warmup
    assert main(["bench", "--config", str(grid), "--out", str(tmp_path / "b"), "--no-plots"]) == 0
    assert "| ce-lp |" in capsys.readouterr().out and (tmp_path / "b" / "results.json").exists()
    assert not (tmp_path / "b" / "selection.png").exists()
    assert main(["bench", "--out", str(tmp_path / "c")]) == 2  # neither a grid nor --quick


def _synthetic(spec: BenchSpec, values: dict) -> dict:
    """results for ``spec`` with ``values[(method, noise)]`` as each finished cell's numbers."""
    from noisyft.bench.results import aggregate

    base = dict(status="done", time_train=12.0, precision_at_k=None, selection={}, test_acc_rule="val-selected")
    rows = [{"cell": c.name, **vars(c), **base, **values[(c.method, c.noise)]} for c in spec.cells()]
    return {"spec": spec.to_dict(), "cells": rows, "table": aggregate(rows),
            "counts": {"done": len(rows), "failed": 0, "running": 0, "pending": 0}}


def test_table_headline_is_val_selected_and_marks_each_setting_s_winner():
    """The probe's best epoch (TURN's 70.00) is a secondary column: the winner is chosen on the headline."""
    from noisyft.bench.results import results_markdown

    spec = BenchSpec.from_dict({"data": "d", "noises": ["sym:0.6", "sym:0.9"], "backbones": "b", "seeds": [0],
                                "methods": ["turn", "ce-fft", "ce-lp"], "val_fraction": 0.1})
    ft = lambda head, best, last, auroc, probe=None, f1=None: dict(
        test_acc=head, fine_tuned_best_test_acc=best, fine_tuned_last_test_acc=last, probe_best_test_acc=probe,
        auroc=auroc, issue_f1=f1)
    md = results_markdown(_synthetic(spec, {
        ("turn", "sym:0.6"): ft(0.60, 0.62, 0.58, 0.91, probe=0.70, f1=0.7), ("turn", "sym:0.9"): ft(0.30, 0.31, 0.25, 0.60, probe=0.35, f1=0.4),
        ("ce-fft", "sym:0.6"): ft(0.64, 0.65, 0.63, 0.85, f1=0.8), ("ce-fft", "sym:0.9"): ft(0.22, 0.24, 0.20, 0.62, f1=0.3),
        ("ce-lp", "sym:0.6"): dict(test_acc=0.55, probe_best_test_acc=0.56, auroc=0.91),
        ("ce-lp", "sym:0.9"): dict(test_acc=0.24, probe_best_test_acc=0.25, auroc=0.50)}))
    lines = md.splitlines()
    header = next(l for l in lines if l.startswith("| Method |")).split("|")
    assert header[2].strip() == "sym:0.6 acc (val-selected)" and header[9].strip() == "sym:0.9 acc (val-selected)"
    assert header[8].strip() == "sym:0.6 issue F1"
    row = {name: next(l for l in lines if l.startswith(f"| {name} |")).split("|") for name in spec.methods}
    # sym:0.6: CE-FFT wins on accuracy though TURN's probe reached 70; TURN and CE-LP tie on AUROC (both bold)
    assert [row[m][2].strip() for m in spec.methods] == ["60.00", "**64.00**", "55.00"]
    assert row["turn"][3].strip() == "62.00 / 58.00" and row["turn"][4].strip() == "70.00"
    assert row["ce-lp"][3].strip() == "—" and row["ce-fft"][4].strip() == "—"
    assert [row[m][7].strip() for m in spec.methods] == ["**0.910**", "0.850", "**0.910**"]
    # issue F1: each setting's best verdicts in bold; a method without verdicts shows a dash
    assert [row[m][8].strip() for m in spec.methods] == ["0.700", "**0.800**", "—"]
    assert [row[m][15].strip() for m in spec.methods] == ["**0.400**", "0.300", "—"]
    # sym:0.9: TURN wins on accuracy, CE-FFT on AUROC
    assert [row[m][9].strip() for m in spec.methods] == ["**30.00**", "22.00", "24.00"]
    assert [row[m][14].strip() for m in spec.methods] == ["0.600", "**0.620**", "0.500"]
    assert "best / last over the logged epochs" not in md


def test_table_without_validation_heads_with_last_epoch_and_flags_a_mismatched_rule():
    from noisyft.bench.results import results_markdown

    spec = BenchSpec.from_dict({"data": "d", "noises": ["sym:0.6"], "backbones": "b", "seeds": [0],
                                "methods": ["turn", "ce-fft"]})
    md = results_markdown(_synthetic(spec, {
        ("turn", "sym:0.6"): dict(test_acc=0.5, test_acc_rule="last epoch", auroc=None),
        ("ce-fft", "sym:0.6"): dict(test_acc=0.6, test_acc_rule="val-selected", auroc=None)}))
    assert "| sym:0.6 acc (last epoch) |" in md
    assert "| turn | 50.00 |" in md and "| ce-fft | **60.00** (val-selected) |" in md


def test_collect_only_tabulates_runs_finished_by_older_code(tmp_path, capsys):
    """An old summary.json (best over every epoch, no per-phase keys): the columns come from metrics.jsonl."""
    spec = BenchSpec.from_dict({"data": "d", "noises": ["sym:0.6"], "backbones": "b", "seeds": [0],
                                "methods": ["turn"], "val_fraction": 0.1})
    d = cell_dir(tmp_path, spec.cells()[0])
    d.mkdir(parents=True)
    metrics = [{"phase": "lp", "epoch": 1, "val_acc": 0.50, "test_acc": 0.60},
               {"phase": "lp", "epoch": 2, "val_acc": 0.70, "test_acc": 0.65},
               {"phase": "fft", "epoch": 1, "val_acc": 0.55, "test_acc": 0.61},
               {"phase": "fft", "epoch": 2, "val_acc": 0.52, "test_acc": 0.62}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (d / "summary.json").write_text(json.dumps({"best_test_acc": 0.65, "last_test_acc": 0.62, "val_selected_test_acc": 0.65,
                                                "timings": {"total": 10.0, "extraction": 2.0}, "detection": {"auroc": 0.9, "issue_f1": 0.75}}))
    (d / "label_issues.csv").write_text("rank\n1\n")
    (d / "state.json").write_text(json.dumps({"finished": ["done"]}))
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    assert main(["bench", "--config", str(tmp_path / "grid.yaml"), "--out", str(tmp_path), "--collect-only",
                 "--no-plots"]) == 0
    row = json.loads((tmp_path / "results.json").read_text())["cells"][0]
    # the fine-tuned model's validation pick (fft:1), not the probe's lp:2 that the old summary called the accuracy
    assert (row["test_acc"], row["test_acc_epoch"], row["test_acc_rule"]) == (0.61, "fft:1", "val-selected")
    assert (row["fine_tuned_best_test_acc"], row["fine_tuned_last_test_acc"], row["probe_best_test_acc"]) == (0.62, 0.62, 0.65)
    assert (row["auroc"], row["issue_f1"]) == (0.9, 0.75)
    assert "| turn | **61.00** | 62.00 / 62.00 | 65.00 |" in (tmp_path / "results.md").read_text()


def test_gpu_fill_runs_only_missing_or_rerun_cells_and_keeps_committed_rows(tmp_path):
    """benchmarks/gpu_fill.py: a committed row is kept unless its method is rerun; the order follows --methods."""
    import dataclasses

    from benchmarks.gpu_fill import cells_to_run, merged_results

    spec = BenchSpec.from_dict({"data": ["d"], "noises": ["sym:0.2", "sym:0.6"], "backbones": ["b"],
                                "methods": ["turn", "consensus", "ce-fft"], "seeds": [0, 1]})
    done = {c.name for c in spec.cells() if c.seed == 0}
    have = {"cells": [{"cell": c.name, **dataclasses.asdict(c), "status": "done", "test_acc": 0.5}
                      for c in spec.cells() if c.name in done]}
    todo = cells_to_run(spec, have, ["consensus", "turn"], rerun=["consensus"], out=tmp_path)
    assert [(c.method, c.seed, c.noise) for c in todo] == [
        ("consensus", 0, "sym:0.2"), ("consensus", 0, "sym:0.6"), ("consensus", 1, "sym:0.2"),
        ("consensus", 1, "sym:0.6"), ("turn", 1, "sym:0.2"), ("turn", 1, "sym:0.6")]
    res = merged_results(spec, have, tmp_path, rerun=["consensus"])  # nothing ran here
    status = {r["cell"]: r["status"] for r in res["cells"]}
    assert {n for n, s in status.items() if s == "done"} == {n for n in done if "__consensus__" not in n}
    assert res["counts"]["done"] == 4 and res["counts"]["pending"] == 8
    ran = todo[0]  # a cell finished here replaces the committed row
    d = cell_dir(tmp_path, ran)
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text(json.dumps({"phase": "fft", "epoch": 1, "val_acc": 0.5, "test_acc": 0.71}) + "\n")
    (d / "summary.json").write_text(json.dumps({"timings": {"total": 1.0}}))
    (d / "label_issues.csv").write_text("rank\n1\n")
    (d / "state.json").write_text(json.dumps({"finished": ["done"]}))
    rows = {r["cell"]: r for r in merged_results(spec, have, tmp_path, rerun=["consensus"])["cells"]}
    assert (rows[ran.name]["status"], rows[ran.name]["test_acc"]) == ("done", 0.71)
    # a second call on the same machine does not start the finished cell again
    assert cells_to_run(spec, have, ["consensus", "turn"], rerun=["consensus"], out=tmp_path) == todo[1:]


def test_gpu_fill_noises_limit_what_runs_and_what_a_rerun_replaces(tmp_path):
    """benchmarks/gpu_fill.py --noises: only those settings' cells run; a rerun method keeps its committed rows
    elsewhere (they are not its changed cells)."""
    import dataclasses

    from benchmarks.gpu_fill import cells_to_run, merged_results

    spec = BenchSpec.from_dict({"data": ["d"], "noises": ["sym:0.2", "sym:0.6"], "backbones": ["b"],
                                "methods": ["consensus", "ce-fft"], "seeds": [0, 1]})
    have = {"cells": [{"cell": c.name, **dataclasses.asdict(c), "status": "done", "test_acc": 0.5}
                      for c in spec.cells() if c.seed == 0]}
    todo = cells_to_run(spec, have, ["consensus", "ce-fft"], rerun=["consensus"], out=tmp_path, noises=["sym:0.2"])
    assert [(c.method, c.seed, c.noise) for c in todo] == [
        ("consensus", 0, "sym:0.2"), ("consensus", 1, "sym:0.2"), ("ce-fft", 1, "sym:0.2")]
    status = {(r["method"], r["seed"], r["noise"]): r["status"]
              for r in merged_results(spec, have, tmp_path, rerun=["consensus"], noises=["sym:0.2"])["cells"]}
    assert status[("consensus", 0, "sym:0.6")] == "done" and status[("consensus", 0, "sym:0.2")] != "done"
    assert status[("ce-fft", 0, "sym:0.2")] == "done"


def test_gpu_fill_timing_pair_alternates_which_method_runs_first(tmp_path, monkeypatch):
    """benchmarks/gpu_fill.py's timing rounds: a, b, then b, a (neither always starts a warm machine's round)."""
    import subprocess as sp
    from pathlib import Path
    from types import SimpleNamespace

    from benchmarks import gpu_fill

    ran = []

    def fake_run(cmd, **kw):
        ran.append(cmd[cmd.index("--method") + 1])
        out = tmp_path / Path(cmd[cmd.index("--out") + 1]).name
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps({"timings": {"total": 1.0}}))
        return SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(sp, "run", fake_run)
    clock = iter(range(0, 1000, 1))
    monkeypatch.setattr(gpu_fill.time, "time", lambda: float(next(clock)))
    base = {"data": ["d.zip"], "image_size": 96, "val_fraction": 0.1}
    rounds = gpu_fill.time_pair(base, "sym:0.2", ["ce-fft", "consensus"], 9.5, tmp_path, lambda _: None)
    assert ran[:4] == ["ce-fft", "consensus", "consensus", "ce-fft"] and len(rounds) >= 2
    assert all(set(r) == {"ce-fft", "consensus"} for r in rounds)


def test_gpu_fill_times_a_method_with_its_settings():
    """A timed label name?key=value runs the method with --extra key=value, beside the plain name."""
    from benchmarks import gpu_fill

    assert gpu_fill.fit_args("ce-fft") == ["--method", "ce-fft"]
    assert gpu_fill.fit_args("consensus?head_batch_size=512&folds=3") == [
        "--method", "consensus", "--extra", "head_batch_size=512", "--extra", "folds=3"]


def test_gpu_fill_timing_round_that_would_end_past_the_deadline_does_not_start(tmp_path, monkeypatch):
    """A first round expected to last ``first_round`` seconds starts only when it ends by the deadline; later rounds
    are expected to last as long as the one before (a round cut by the call's limit lost a call's cells once)."""
    import subprocess as sp
    from pathlib import Path
    from types import SimpleNamespace

    from benchmarks import gpu_fill

    ran = []

    def fake_run(cmd, **kw):
        ran.append(cmd[cmd.index("--method") + 1])
        out = tmp_path / Path(cmd[cmd.index("--out") + 1]).name
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps({"timings": {"total": 1.0}}))
        return SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(sp, "run", fake_run)
    base = {"data": ["d.zip"], "image_size": 96, "val_fraction": 0.1}
    clock = iter(range(0, 1000, 1))
    monkeypatch.setattr(gpu_fill.time, "time", lambda: float(next(clock)))
    assert gpu_fill.time_pair(base, "sym:0.2", ["a", "b"], 5.0, tmp_path, lambda _: None, first_round=6.0) == []
    assert ran == []
    clock = iter(range(0, 1000, 1))
    monkeypatch.setattr(gpu_fill.time, "time", lambda: float(next(clock)))
    rounds = gpu_fill.time_pair(base, "sym:0.2", ["a", "b"], 7.0, tmp_path, lambda _: None, first_round=2.0)
    assert len(rounds) == 1 and ran == ["a", "b"]  # the first round's 3 clock ticks leave too little for a second


def test_summary_table_bolds_each_settings_best_and_averages_seeds():
    """benchmarks/summary_table.py: mean ± std over a method's seeds, the best accuracy and AUROC of a setting in
    bold (each its own winner), a mean column only for methods with every setting, F1 against the reference."""
    from benchmarks.summary_table import markdown, per_seed, summary

    from noisyft.bench.results import aggregate

    def cell(m, n, s, acc, auroc, f1=None):
        return {"data": "d", "backbone": "b", "method": m, "noise": n, "seed": s, "status": "done",
                "val_selected_test_acc": acc, "auroc": auroc, "issue_f1": f1}

    def with_table(results):  # as noisyft bench writes it: the cells and their means over seeds
        return {**results, "table": aggregate(results["cells"])}

    results = {"spec": {"noises": ["sym:0.2", "sym:0.6"]}, "cells": [
        cell("a", "sym:0.2", 0, 0.80, 0.90, 0.7), cell("a", "sym:0.2", 1, 0.82, 0.92, 0.8),
        cell("a", "sym:0.6", 0, 0.60, 0.95, 0.9),
        cell("b", "sym:0.2", 0, 0.85, 0.80, 0.5), cell("b", "sym:0.6", 0, 0.50, 0.85),
        cell("c", "sym:0.2", 0, 0.99, 0.99),
        {"data": "d", "backbone": "b", "method": "c", "noise": "sym:0.6", "seed": 0, "status": "pending"}]}
    s = summary(with_table(results))
    assert s["rows"]["a"]["sym:0.2"]["acc"] == pytest.approx(81.0) and s["rows"]["a"]["sym:0.2"]["acc_std"] == pytest.approx(1.0)
    assert s["best"]["sym:0.2"] == {"acc": "c", "auroc": "c"} and s["best"]["sym:0.6"] == {"acc": "a", "auroc": "a"}
    md = markdown(s).splitlines()
    row = {line.split(" | ")[0][2:]: line for line in md[2:]}
    assert "81.0 ± 1.0 · 0.910" in row["a"] and "**60.0** · **0.950**" in row["a"] and row["a"].endswith("| **70.5** |")
    assert row["b"].endswith("| 67.5 |") and row["c"].endswith("| — |") and "**99.0** · **0.990** | — |" in row["c"]
    lines = per_seed(s, ["a"], "b")
    assert "sym-0.2 80.0 / 82.0" in lines and "sym-0.2 0.750 (0.500, +25.0)" in lines and "sym-0.6 0.900" in lines
    clean = summary(with_table({"spec": {"noises": [None]}, "cells": [cell("a", None, 0, 0.5, None)]}))  # labels as given
    assert markdown(clean).splitlines()[0] == "| method | none | mean acc |" and "**50.0** · —" in markdown(clean)


GRIDS = sorted(p for p in (Path(__file__).resolve().parent.parent / "benchmarks" / "grids").glob("*.yaml")
               if p.name != "consensus_variants.yaml")  # that one maps variant names to settings (gpu_grid.py)


@pytest.mark.parametrize("grid", GRIDS, ids=[p.stem for p in GRIDS])
def test_every_committed_grid_parses_into_cells_of_registered_methods(grid):
    """A committed grid must still describe a runnable bench: a typo, a renamed method or setting would otherwise
    surface only when someone reruns the benchmark its results file names."""
    import copy

    import noisyft.methods  # noqa: F401  (registers every method)
    from noisyft.bench.grid import BenchSpec
    from noisyft.methods.registry import METHODS

    spec = BenchSpec.from_dict(copy.deepcopy(yaml.safe_load(grid.read_text())), str(grid))
    cells = spec.cells()
    assert cells and {c.method.split("?")[0] for c in cells} <= set(METHODS.names())
