"""Imports run one way, down the pipeline: a module imports only from its own layer or the layers below.

Every module under ``noisyft/`` is parsed (no import runs) and each ``import`` of a noisyft module,
at any nesting level (a lazy import inside a function counts: it runs upward all the same; only
imports under ``if TYPE_CHECKING:`` are left out), must point at a layer no higher than the
importer's. A module missing from LAYERS fails too, so a new file has to be placed.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "noisyft"

# layer: what lives there (the order of the pipeline); a package name stands for every module in it
LAYERS: dict[str, int] = {
    # 0 basic utilities
    "noisyft": 0, "noisyft.errors": 0, "noisyft.atomic": 0, "noisyft.registry": 0, "noisyft.options": 0,
    "noisyft.faults": 0, "noisyft.dist": 0, "noisyft.csvsafe": 0, "noisyft.runlock": 0, "noisyft.figures": 0,
    # 1 the run's configuration (FitConfig, OptimConfig)
    "noisyft.config": 1,
    # 2 data: sources, readers, noise, transforms (Preprocess), labels CSV, safe unpickling, inputs, prepare
    "noisyft.data": 2,
    # 3 backbones: registry + one module per family (timm, efficientnet, hf, clip)
    "noisyft.backbones": 3,
    # 4 images through a backbone: loader + forward pass, feature cache, decoded images
    "noisyft.features": 4,
    # 5 what methods are made of
    "noisyft.selection": 5, "noisyft.losses": 5, "noisyft.engine": 5,
    # 6 the run directory's files: names, RunDir, summary, label-issue table, loss/GMM records, saved model
    "noisyft.run": 6,
    # 7 the methods
    "noisyft.methods": 7,
    # 8 the HTML report of a finished run (reads run files; api.report calls it)
    "noisyft.report": 8,
    # 9 the Python API (fit, resume, detect, predict, report, demo)
    "noisyft.api": 9,
    # 10 grids of fits over the API; search over fit settings (Ray Tune); the Ray connection both use
    "noisyft.bench": 10, "noisyft.tune": 10, "noisyft.ray_session": 10,
    # 11 the command line
    "noisyft.cli": 11, "noisyft.__main__": 11,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    """The layer of ``module``: its own entry, else its nearest package's (``noisyft`` itself only by name)."""
    name = module
    while name:
        if name in LAYERS and (name != "noisyft" or module == "noisyft"):
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def noisyft_imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every noisyft import in ``source`` (the text of ``module``), at any
    depth, not under TYPE_CHECKING; relative imports are resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "noisyft")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "noisyft":
                # ``from noisyft import api`` / ``from noisyft.bench import grid`` import modules: check each
                names = [f"{target}.{a.name}" for a in node.names]
                subs = [n for n in names if (PACKAGE.parent / (n.replace(".", "/") + ".py")).exists()
                        or (PACKAGE.parent / n.replace(".", "/")).is_dir()]
                found.extend((node.lineno, n) for n in subs) if subs else found.append((node.lineno, target))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = [module_name(p) for p in MODULES if layer_of(module_name(p)) is None]
    assert not missing, f"modules missing from LAYERS in tests/test_layers.py (place them): {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_run_downward(path: Path):
    mine = layer_of(module_name(path))
    assert mine is not None, f"{module_name(path)} is missing from LAYERS"
    bad = []
    for line, target in noisyft_imports(path.read_text(), module_name(path), path.name == "__init__.py"):
        theirs = layer_of(target)
        if theirs is None:
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}, which is missing from LAYERS")
        elif theirs > mine:
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} (layer {theirs} > {mine})")
    assert not bad, "\n".join(bad)


def test_the_check_catches_an_upward_lazy_import():
    """The parser sees an import inside a function (relative ones too) and skips one under ``if TYPE_CHECKING:``."""
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from noisyft.api import fit\n"
           "def f():\n    from noisyft.report.plots import save_png\n    from ..run import rundir\n")
    found = noisyft_imports(src, "noisyft.methods.probe")
    assert found == [(5, "noisyft.report.plots"), (6, "noisyft.run.rundir")]
    assert layer_of("noisyft.report.plots") > layer_of("noisyft.methods.probe") > layer_of("noisyft.run.rundir")
    assert layer_of("noisyft.brand_new") is None  # an unplaced module fails test_every_module_has_a_layer
