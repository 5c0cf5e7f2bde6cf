"""The noise rate told to the user against the truth, from the committed bench results (no training).

Every run prints and stores two estimates of how many training labels are wrong (``summary.json``'s
``noise_rate`` block): the share the method itself flags (``estimated``, its ``is_label_issue``) and
cleanlab's confident-joint estimate from the method's class probabilities (``confident_joint``). This
compares both with the true share of wrong training labels, per setting, method and noise, averaged
over the seeds that ran.

Only today's code counts: the bench files are read in ``SOURCES`` order and a later file's cell
replaces an earlier one of the same setting, method, noise and seed (the grids rerun with the verdict of
``new_method_design.md`` §12 and the delivery rule of §13 come last). Grids older than the block (the
first TURN and baseline grids) are not read.

    python -m benchmarks.noise_rate_error
"""
from __future__ import annotations

import json

import numpy as np

from benchmarks.common import RESULTS, md_table, write_results

SOURCES = [  # oldest first; later cells replace earlier ones of the same key
    "bench_cifar10_64px_issue13.json", "bench_cifar10_64px_lownoise.json", "bench_cifar10_64px_verdict.json",
    "bench_cifar10_64px_delivery.json", "bench_fmnist_issue13.json", "bench_fmnist_delivery.json",
    "bench_cifar10_96px_gpu.json", "bench_cifar10_96px_delivery_cpu.json",
]


def setting(name: str, spec: dict) -> str:
    """A readable name of a grid's data: dataset, resolution, training images, and the GPU grid apart."""
    data = " ".join(spec.get("data", []))
    label = "Fashion-MNIST" if "fashion" in data else "CIFAR-10" if "cifar10" in data else data
    size = f" {spec['image_size']} px" if spec.get("image_size") else ""
    n = f", {spec['max_train']:,}" if spec.get("max_train") else ""
    return f"{label}{size}{n}{' (GPU)' if 'gpu' in name else ''}"


def cells() -> dict[tuple, dict]:
    """Today's cell per (setting, method, noise, seed) that reports the noise-rate block with its truth."""
    latest: dict[tuple, dict] = {}
    for name in SOURCES:
        bench = json.loads((RESULTS / name).read_text())
        where = setting(name, bench["spec"])
        for c in bench["cells"]:
            nr = c.get("noise_rate") or {}
            if "true" in nr:
                latest[(where, c["method"], c["noise"] or "none", c.get("seed"))] = {**nr, "file": name}
    return latest


def rows(latest: dict[tuple, dict]) -> list[dict]:
    """Seed means per (setting, method, noise)."""
    groups: dict[tuple, list[dict]] = {}
    for (where, method, noise, _), nr in latest.items():
        groups.setdefault((where, method, noise), []).append(nr)
    out = []
    for (where, method, noise), nrs in groups.items():
        def mean(get):
            vals = [get(nr) for nr in nrs]
            return float(np.mean(vals)) if all(v is not None for v in vals) else None
        out.append({"setting": where, "method": method, "noise": noise, "seeds": len(nrs),
                    "true": mean(lambda r: r["true"]["overall"]), "flagged": mean(lambda r: r["estimated"]["overall"]),
                    "flagged_abs_error": mean(lambda r: r["abs_error"]["estimated"]["overall"]),
                    "confident_joint": mean(lambda r: (r.get("confident_joint") or {}).get("overall")),
                    "cj_abs_error": mean(lambda r: (r["abs_error"].get("confident_joint") or {}).get("overall")),
                    "file": nrs[-1]["file"]})
    return sorted(out, key=lambda r: (r["setting"], r["method"], r["true"]))


def summary(table: list[dict]) -> list[dict]:
    """Mean and worst absolute error of each estimate per (setting, method), over its noise settings."""
    out = []
    for where, method in sorted({(r["setting"], r["method"]) for r in table}):
        sub = [r for r in table if r["setting"] == where and r["method"] == method]
        cj = [r["cj_abs_error"] for r in sub if r["cj_abs_error"] is not None]
        out.append({"setting": where, "method": method, "noise settings": len(sub),
                    "flagged mean / max abs error": f"{np.mean([r['flagged_abs_error'] for r in sub]):.3f} / "
                                                    f"{np.max([r['flagged_abs_error'] for r in sub]):.3f}",
                    "confident joint mean / max": f"{np.mean(cj):.3f} / {np.max(cj):.3f}" if cj else "–"})
    return out


def main() -> None:
    table = rows(cells())
    cols = ["setting", "method", "noise", "seeds", "true", "flagged", "flagged_abs_error", "confident_joint",
            "cj_abs_error"]
    md = ("`flagged`: the share of training labels the method calls wrong (`is_label_issue`, the console line's "
          "\"noise est.\"); `confident_joint`: cleanlab's estimate from the method's class probabilities (the "
          "console line's \"cleanlab CJ\"); `true`: the share of training labels that are wrong. Means over the "
          "seeds that ran; errors are absolute, in rate units, averaged over those seeds. Sources, in the order "
          "later cells replace earlier ones: " + ", ".join(f"`{s}`" for s in SOURCES) + ".\n\n"
          "Mean and worst absolute error per method, over the noise settings each ran:\n\n"
          + md_table(summary(table), ["setting", "method", "noise settings", "flagged mean / max abs error",
                                      "confident joint mean / max"])
          + "\n\nEvery setting:\n\n" + md_table(table, cols))
    print(md)
    write_results("noise_rate_error", {"sources": SOURCES, "rows": table}, md)


if __name__ == "__main__":
    main()
