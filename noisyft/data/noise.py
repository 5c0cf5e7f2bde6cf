"""Synthetic label noise: symmetric, asymmetric and instance-dependent.

Benchmarks on noisy labels start from clean labels and corrupt them with a
seeded recipe; results are only comparable when the recipe is exactly the one
the paper used. Each recipe here is named, documented with its convention, and
reproducible: the same ``seed`` gives the same noisy labels. :func:`apply_noise`
returns the noisy set plus an info dict (kind, rate asked for, rate realised,
seed, convention, C×C transition counts) that the run saves.

Kinds (``KIND:RATE`` on the command line, see :func:`parse_noise`):

``sym``
    With probability r the label is replaced by a class drawn uniformly from
    all C classes, *the true class included* (DivideMix / TURN convention), so
    the realised noise is about r·(1 − 1/C).
``symflip``
    As ``sym`` but the draw excludes the true class: realised noise about r.
``asym``
    Class-conditional flips, chosen from the class names: the CIFAR-10 map
    (truck→automobile, bird→airplane, deer→horse, cat↔dog) or the CIFAR-100
    superclass map (each fine class → the next fine class of its superclass in
    the published table's order, cyclically). Each sample of a mapped class
    flips with probability r; other classes never change.
``asym-block``
    The popular CIFAR-100 code's map i → 5·⌊i/5⌋ + (i+1) mod 5 (next index
    within consecutive blocks of 5, cyclically), for any C divisible by 5. This
    is NOT the superclass map: CIFAR-100 fine labels are alphabetical, so a
    block of 5 indices mixes superclasses (beaver(4) → apple(0), not dolphin).
``inst``
    Instance-dependent noise after CORES (Cheng et al. 2021), the recipe the
    TURN paper cites. See :func:`instance_noise`.
``inst-ptd``
    Part/instance-dependent noise after PTD (Xia et al. 2020), the recipe
    DEFT uses. See :func:`instance_noise`.

Randomness: every sampler draws per-sample Bernoulli flips (not an exact count
of flipped samples), and draws its random numbers for every sample whatever
its class, so the stream does not depend on which samples flip.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from noisyft.data.base import ImageSource, LabeledSet
from noisyft.data.cifar100 import FINE_CLASSES as CIFAR100_CLASSES
from noisyft.data.cifar100 import SUPERCLASS_NEXT as CIFAR100_ASYM
from noisyft.errors import UserError

__all__ = [
    "NOISE_KINDS",
    "CIFAR10_CLASSES",
    "CIFAR10_ASYM",
    "NoiseSpec",
    "parse_noise",
    "symmetric_noise",
    "asymmetric_noise",
    "asymmetric_targets",
    "instance_noise",
    "raw_pixel_matrix",
    "instance_noise_from_source",
    "apply_noise",
    "transition_matrix",
]

#: The noise kinds :func:`parse_noise` and :func:`apply_noise` accept.
NOISE_KINDS: tuple[str, ...] = ("sym", "symflip", "asym", "asym-block", "inst", "inst-ptd")

#: CIFAR-10 class names in the standard label order.
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

#: The CIFAR-10 asymmetric map of Patrini et al. 2017 (used by DivideMix, TURN), by name.
CIFAR10_ASYM: dict[str, str] = {
    "truck": "automobile",
    "bird": "airplane",
    "deer": "horse",
    "cat": "dog",
    "dog": "cat",
}

#: Standard deviation of the per-sample flip rate of both instance-dependent recipes.
INSTANCE_RATE_STD = 0.1

_CONVENTIONS = {
    "sym": "symmetric: with probability r the label is replaced by a class drawn uniformly from all C "
    "classes, the true class included (DivideMix/TURN convention); expected realised noise r*(1-1/C)",
    "symflip": "symmetric, flip: with probability r the label is replaced by a class drawn uniformly from "
    "the other C-1 classes (never the true class); expected realised noise r",
    "asym/cifar10": "asymmetric CIFAR-10: truck->automobile, bird->airplane, deer->horse, cat->dog, "
    "dog->cat, each sample of these classes flipped with probability r; other classes unchanged",
    "asym/cifar100": "asymmetric CIFAR-100 (TURN): each fine class -> the next fine class of its superclass "
    "in the published superclass table's order, cyclically, with probability r",
    "asym/block": "asymmetric block: class i -> 5*(i//5) + (i+1)%5 (next index within consecutive blocks "
    "of 5, cyclically) with probability r; NOT the CIFAR-100 superclass mapping",
    "inst": "instance-dependent, CORES (Cheng et al. 2021): q_i ~ N(r, 0.1) redrawn until 0<q_i<1; "
    "one W (L x C) ~ N(0,1); scores = x_i W with the true class at -inf; P(flip to j) = "
    "q_i*softmax(scores)_j, the true class keeps 1-q_i; x_i = image resized to {s}x{s} RGB, "
    "flattened, scaled to [0,1]",
    "inst-ptd": "instance-dependent, PTD (Xia et al. 2020): q_i ~ N(r, 0.1) truncated to [0,1]; one W_c "
    "(L x C) ~ N(0,1) per true class c; scores = x_i W_{{y_i}} with the true class at -inf; "
    "P(flip to j) = q_i*softmax(scores)_j, the true class keeps 1-q_i; x_i = image resized to "
    "{s}x{s} RGB, flattened, scaled to [0,1]",
}


# ---------------------------------------------------------------------------
# Spec and parsing
# ---------------------------------------------------------------------------


def _check_rate(rate: float, what: str = "noise rate") -> float:
    """Return ``rate`` as a float, or raise UserError unless it is a number in [0, 1]."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise UserError(f"{what} {rate!r} is not a number; give a rate in [0, 1], e.g. 0.4") from None
    if not math.isfinite(r) or not 0.0 <= r <= 1.0:
        raise UserError(f"{what} {rate!r} must be in [0, 1], e.g. 0.4")
    return r


@dataclass
class NoiseSpec:
    """Which synthetic noise to inject: a kind from :data:`NOISE_KINDS` and a rate in [0, 1].

    ``str(spec)`` gives back the ``KIND:RATE`` text that :func:`parse_noise` reads.
    """

    kind: str
    rate: float

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise UserError(f"unknown noise kind {self.kind!r}{_suggest(self.kind)} (known: {', '.join(NOISE_KINDS)})")
        self.rate = _check_rate(self.rate, f"noise rate for {self.kind!r}")

    def __str__(self) -> str:
        return f"{self.kind}:{self.rate:g}"


def _suggest(kind: str) -> str:
    near = difflib.get_close_matches(kind, NOISE_KINDS, n=2, cutoff=0.5)
    return f"; did you mean {' or '.join(near)}?" if near else ""


def parse_noise(text: str) -> NoiseSpec:
    """Parse ``"KIND:RATE"`` (e.g. ``"sym:0.6"``, ``"asym:0.4"``, ``"inst:0.4"``) into a :class:`NoiseSpec`.

    Case and surrounding spaces are ignored. Raises a one-line :class:`UserError`
    that quotes the bad text, lists the valid kinds and says the rate must be in [0, 1].
    """
    usage = f"expected KIND:RATE with KIND one of {', '.join(NOISE_KINDS)} and RATE in [0, 1], e.g. 'sym:0.4'"
    if not isinstance(text, str) or text.count(":") != 1:
        raise UserError(f"noise {text!r}: {usage}")
    kind, _, rate_text = (part.strip() for part in text.strip().lower().partition(":"))
    if kind not in NOISE_KINDS:
        raise UserError(f"noise {text!r}: unknown kind {kind!r}{_suggest(kind)}; {usage}")
    try:
        rate = float(rate_text)
    except ValueError:
        raise UserError(f"noise {text!r}: rate {rate_text!r} is not a number; {usage}") from None
    if not math.isfinite(rate) or not 0.0 <= rate <= 1.0:
        raise UserError(f"noise {text!r}: rate {rate_text} is outside [0, 1]; {usage}")
    return NoiseSpec(kind, rate)


# ---------------------------------------------------------------------------
# Samplers (pure functions on label arrays)
# ---------------------------------------------------------------------------


def _check_labels(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=True)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return y


def symmetric_noise(
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    *,
    exclude_true: bool = False,
) -> np.ndarray:
    """Symmetric (uniform) label noise; returns a new int64 label array.

    Each sample independently, with probability ``rate``, gets a label drawn
    uniformly at random. With ``exclude_true=False`` (kind ``sym``, the
    DivideMix/TURN convention) the draw is over all ``num_classes`` classes and
    may return the true class, so the expected fraction of changed labels is
    ``rate * (1 - 1/num_classes)``. With ``exclude_true=True`` (kind
    ``symflip``) the draw is over the other ``num_classes - 1`` classes, so the
    expected fraction changed is ``rate``.
    """
    y = _check_labels(labels, num_classes)
    rate = _check_rate(rate)
    n = len(y)
    flip = rng.random(n) < rate
    if exclude_true:
        if num_classes < 2:
            raise UserError("noise symflip needs at least 2 classes (a flip must change the class)")
        draw = (y + rng.integers(1, num_classes, size=n)) % num_classes
    else:
        draw = rng.integers(0, num_classes, size=n)
    out = y.copy()
    out[flip] = draw[flip]
    return out


def _norm_name(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def _detect_asym_variant(classes: Sequence[str]) -> Optional[str]:
    names = {_norm_name(c) for c in classes}
    if len(names) == len(classes) == 10 and names == set(CIFAR10_CLASSES):
        return "cifar10"
    if len(names) == len(classes) == 100 and names == set(CIFAR100_CLASSES):
        return "cifar100"
    return None


def asymmetric_targets(classes: Sequence[str], variant: str = "auto") -> tuple[np.ndarray, str]:
    """The class each class flips to under asymmetric noise, and the variant used.

    Returns ``(target, variant)`` where ``target[c]`` is the index class ``c``
    flips to (``target[c] == c`` for classes that never flip) and ``variant``
    is ``"cifar10"``, ``"cifar100"`` or ``"block"``. The CIFAR maps are applied
    by class *name* (case, spaces and hyphens ignored), so any class order works.
    ``"auto"`` picks CIFAR-10 or CIFAR-100 when the names are exactly those of
    that dataset, and otherwise raises a :class:`UserError`.
    """
    classes = [str(c) for c in classes]
    num_classes = len(classes)
    if variant not in ("auto", "cifar10", "cifar100", "block"):
        raise UserError(f"unknown asymmetric variant {variant!r} (known: auto, cifar10, cifar100, block)")
    if variant == "block":
        if num_classes == 0 or num_classes % 5:
            raise UserError(
                f"noise asym-block needs a number of classes divisible by 5, got {num_classes}; use sym or symflip"
            )
        idx = np.arange(num_classes)
        return (idx // 5) * 5 + (idx % 5 + 1) % 5, "block"
    detected = _detect_asym_variant(classes)
    if variant == "auto":
        if detected is None:
            shown = ", ".join(classes[:5]) + (", …" if num_classes > 5 else "")
            raise UserError(
                f"noise asym is defined for the CIFAR-10 and CIFAR-100 class names, but the classes are "
                f"{shown} ({num_classes} classes); use asym-block (i -> i+1 within blocks of 5) or sym"
            )
        variant = detected
    elif detected != variant:
        want = "CIFAR-10" if variant == "cifar10" else "CIFAR-100"
        raise UserError(f"asymmetric variant {variant!r} needs the {want} class names, which these classes are not")
    mapping = CIFAR10_ASYM if variant == "cifar10" else CIFAR100_ASYM
    index = {_norm_name(c): i for i, c in enumerate(classes)}
    target = np.arange(num_classes)
    for src, dst in mapping.items():
        target[index[src]] = index[dst]
    return target, variant


def asymmetric_noise(
    labels: Sequence[int] | np.ndarray,
    classes: list[str],
    rate: float,
    rng: np.random.Generator,
    *,
    variant: str = "auto",
) -> np.ndarray:
    """Class-conditional (asymmetric) label noise; returns a new int64 label array.

    Each sample of a mapped class independently flips, with probability
    ``rate``, to that class's fixed target (see :func:`asymmetric_targets`);
    samples of unmapped classes never change.

    ``variant``: ``"cifar10"`` (truck→automobile, bird→airplane, deer→horse,
    cat↔dog), ``"cifar100"`` (the TURN superclass map: next fine class of the
    same superclass in the published table's order, cyclically), ``"block"``
    (i → next index within consecutive blocks of 5 — the popular code's map,
    NOT the superclass map), or ``"auto"`` (CIFAR-10 or CIFAR-100 from the names).
    """
    target, _ = asymmetric_targets(classes, variant)
    y = _check_labels(labels, len(classes))
    rate = _check_rate(rate)
    flip = rng.random(len(y)) < rate
    out = y.copy()
    out[flip] = target[y[flip]]
    return out


def _truncated_normal(rng: np.random.Generator, mean: float, std: float, n: int) -> np.ndarray:
    """``n`` draws of N(mean, std²) restricted to (0, 1), by redrawing those outside.

    This is CORES's "redraw until 0 < q < 1" and has the distribution of PTD's
    ``scipy.stats.truncnorm`` on [0, 1] (the end points have probability zero).
    """
    out = np.empty(0)
    while len(out) < n:
        draw = rng.normal(mean, std, size=max(2 * (n - len(out)), 16))
        out = np.concatenate([out, draw[(draw > 0.0) & (draw < 1.0)]])
    return out[:n]


def _sample_rows(y: np.ndarray, scores: np.ndarray, q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Draw one label per row from the flip distribution built from ``scores``.

    The true class's score is set to −inf, the rest go through a softmax that is
    scaled by the flip rate ``q``; the true class keeps ``1 − q``. ``u`` are
    uniform numbers, one per row, used by inverse-CDF sampling.
    """
    rows = np.arange(len(y))
    s = scores.astype(np.float64, copy=True)
    s[rows, y] = -np.inf
    s -= s.max(axis=1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=1, keepdims=True)
    p *= q[:, None]
    p[rows, y] = 1.0 - q
    cdf = np.cumsum(p, axis=1)
    return np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=1), scores.shape[1] - 1)


def _as_float_rows(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64, copy=False)


def instance_noise(
    labels: Sequence[int] | np.ndarray,
    images: np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    *,
    recipe: str = "cores",
    chunk_size: int = 2048,
) -> np.ndarray:
    """Instance-dependent label noise; returns a new int64 label array.

    ``images`` is an ``(N, L)`` array, one flattened image per row, as floats in
    [0, 1] (a uint8 array is accepted and divided by 255);
    :func:`raw_pixel_matrix` builds it from an :class:`ImageSource`. Both
    recipes draw a per-sample flip rate ``q_i`` with mean ``rate`` and standard
    deviation 0.1, restricted to (0, 1), and a random linear map of the pixels:

    ``recipe="cores"`` (CORES, Cheng et al. 2021; kind ``inst``): ``q_i`` from
    N(rate, 0.1), redrawn until 0 < q_i < 1; one W of size L × C from N(0, 1).
    ``recipe="ptd"`` (PTD, Xia et al. 2020; kind ``inst-ptd``): ``q_i`` from
    N(rate, 0.1) truncated to [0, 1]; one W_c of size L × C per true class c.

    Then scores = x_i W (or x_i W_{y_i}), the true class's score is set to −∞,
    the label flips to class j with probability q_i · softmax(scores)_j and
    stays with probability 1 − q_i, so the expected noise is mean(q_i) ≈ rate
    (a little above it for rate near 0, below for rate near 1, from the
    truncation). As an exception to the published recipes, ``rate == 0``
    returns the labels unchanged (the truncated normal would still give ~8%
    noise), so ``inst:0`` is a clean baseline.

    Random draws, in order: q (N), u (N uniforms for sampling), W (all of it,
    for PTD W_0 … W_{C-1}), so the result depends only on the seed and inputs.
    """
    y = _check_labels(labels, num_classes)
    rate = _check_rate(rate)
    if recipe not in ("cores", "ptd"):
        raise UserError(f"unknown instance-noise recipe {recipe!r} (known: cores, ptd)")
    x = np.asarray(images)
    if x.ndim != 2 or x.shape[0] != len(y):
        raise ValueError(f"images must be an (N, L) array with N = {len(y)} labels, got shape {x.shape}")
    if num_classes < 2:
        raise UserError("instance-dependent noise needs at least 2 classes")
    if rate == 0.0 or len(y) == 0:
        return y.copy()
    n, length = x.shape
    q = _truncated_normal(rng, rate, INSTANCE_RATE_STD, n)
    u = rng.random(n)
    out = y.copy()
    if recipe == "cores":
        w = rng.standard_normal((length, num_classes))
        for start in range(0, n, chunk_size):
            sl = slice(start, start + chunk_size)
            out[sl] = _sample_rows(y[sl], _as_float_rows(x[sl]) @ w, q[sl], u[sl])
    else:
        for c in range(num_classes):  # one W per class, drawn for every class so the stream is fixed
            w = rng.standard_normal((length, num_classes))
            idx = np.flatnonzero(y == c)
            for start in range(0, len(idx), chunk_size):
                rows = idx[start : start + chunk_size]
                out[rows] = _sample_rows(y[rows], _as_float_rows(x[rows]) @ w, q[rows], u[rows])
    return out


def raw_pixel_matrix(source: ImageSource, size: int = 32) -> np.ndarray:
    """The ``(N, size*size*3)`` uint8 matrix of raw pixels that instance noise projects.

    Real images differ in size, so every image is converted to RGB (grey is
    replicated, alpha dropped) and resized to ``size × size`` with PIL bilinear
    resampling when it is not that size already, then flattened in H, W, C
    order. At the default 32 this is exactly the raw CIFAR image. Pass the
    result to :func:`instance_noise`, which scales uint8 to [0, 1].
    One pass over the source (no progress bar); memory is N × size² × 3 bytes.
    """
    if size < 1:
        raise UserError(f"instance-noise image size must be >= 1, got {size}")
    n = len(source)
    out = np.empty((n, size * size * 3), dtype=np.uint8)
    for i in range(n):
        a = np.asarray(source.raw(i))
        if a.shape != (size, size, 3) or a.dtype != np.uint8:
            if a.ndim == 3 and a.shape[2] == 1:
                a = a[:, :, 0]
            img = Image.fromarray(np.ascontiguousarray(a.astype(np.uint8, copy=False))).convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            a = np.asarray(img, dtype=np.uint8)
        out[i] = a.reshape(-1)
    return out


def instance_noise_from_source(
    labels: Sequence[int] | np.ndarray,
    source: ImageSource,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    *,
    recipe: str = "cores",
    size: int = 32,
) -> np.ndarray:
    """:func:`instance_noise` on the images of ``source``, resized to ``size × size`` RGB (see :func:`raw_pixel_matrix`)."""
    if len(labels) != len(source):
        raise ValueError(f"{len(labels)} labels for {len(source)} images")
    return instance_noise(labels, raw_pixel_matrix(source, size), num_classes, rate, rng, recipe=recipe)


# ---------------------------------------------------------------------------
# Applying a spec to a data set
# ---------------------------------------------------------------------------


def transition_matrix(
    true: Sequence[int] | np.ndarray, noisy: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """``(C, C)`` int64 counts: entry ``[i, j]`` = number of samples of true class i labelled j."""
    t = _check_labels(true, num_classes)
    z = _check_labels(noisy, num_classes)
    if len(t) != len(z):
        raise ValueError(f"{len(t)} true labels but {len(z)} noisy labels")
    return np.bincount(t * num_classes + z, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def apply_noise(spec: NoiseSpec, data: LabeledSet, seed: int, *, image_size: int = 32) -> tuple[LabeledSet, dict]:
    """Inject the noise ``spec`` into ``data``'s labels, seeded by ``seed``.

    The given labels of ``data`` are taken as clean. Returns ``(noisy, info)``:
    ``noisy`` has the same images, the noisy labels as ``labels`` and the
    original labels as ``true_labels`` (so selection precision/recall can be
    measured); ``info`` is a JSON-ready dict to save with the run: ``kind``,
    ``rate`` (requested), ``realised_rate`` (fraction of labels changed),
    ``seed``, ``convention`` (the recipe in words), ``num_classes``,
    ``num_samples`` and ``transition_matrix`` (C×C counts, rows = true class,
    columns = noisy label, as nested lists). Asymmetric kinds add ``variant``
    and ``realised_rate_mapped`` (changed fraction among samples of mapped
    classes); instance kinds add ``recipe`` and ``image_size``.

    ``image_size`` is the side images are resized to for instance-dependent noise.
    Raises :class:`UserError` if ``data`` already has true labels that differ
    from its labels (synthetic noise on top of real noise would lose the truth).
    """
    if not isinstance(spec, NoiseSpec):
        raise TypeError(f"spec must be a NoiseSpec, got {type(spec).__name__}")
    clean = np.asarray(data.labels, dtype=np.int64)
    if data.true_labels is not None and not np.array_equal(data.true_labels, clean):
        raise UserError(
            f"noise {spec}: these labels are already noisy (they differ from the known true labels); "
            "synthetic noise is only added to clean labels"
        )
    num_classes = data.num_classes
    rng = np.random.default_rng(seed)
    extra: dict = {}
    if spec.kind in ("sym", "symflip"):
        noisy = symmetric_noise(clean, num_classes, spec.rate, rng, exclude_true=spec.kind == "symflip")
        convention = _CONVENTIONS[spec.kind]
    elif spec.kind in ("asym", "asym-block"):
        target, variant = asymmetric_targets(data.classes, "block" if spec.kind == "asym-block" else "auto")
        noisy = asymmetric_noise(clean, data.classes, spec.rate, rng, variant=variant)
        convention = _CONVENTIONS[f"asym/{variant}"]
        mapped = target[clean] != clean
        extra = {
            "variant": variant,
            "realised_rate_mapped": float(np.mean(noisy[mapped] != clean[mapped])) if mapped.any() else 0.0,
        }
    else:
        recipe = "cores" if spec.kind == "inst" else "ptd"
        noisy = instance_noise_from_source(
            clean, data.source, num_classes, spec.rate, rng, recipe=recipe, size=image_size
        )
        convention = _CONVENTIONS[spec.kind].format(s=image_size)
        extra = {"recipe": recipe, "image_size": image_size}
    info = {
        "kind": spec.kind,
        "rate": spec.rate,
        "realised_rate": float(np.mean(noisy != clean)) if len(clean) else 0.0,
        "seed": int(seed),
        "convention": convention,
        "num_classes": num_classes,
        "num_samples": int(len(clean)),
        **extra,
        "transition_matrix": transition_matrix(clean, noisy, num_classes).tolist(),
    }
    return data.with_labels(noisy, true_labels=clean), info
