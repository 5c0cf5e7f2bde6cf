"""Clean-sample selection for TURN: per-class two-component GMMs on losses.

TURN (and DivideMix before it) decides which labels to trust from the
per-sample training loss: within one class, samples whose label is right tend
to have a small loss and mislabelled ones a large loss, so the losses of a
class form two bumps.  For every class ``c`` we fit a two-component 1-D
Gaussian mixture to the losses of the samples labelled ``c``; the component
with the lower mean is the "clean" one, and a sample is selected when its
posterior under that component is greater than ``tau`` (0.6).  The training
subset is then made class-balanced by drawing ``N_min`` clean samples
uniformly at random from every class, ``N_min`` being the smallest number of
clean samples any class has.

The fit mirrors ``sklearn.mixture.GaussianMixture(n_components=2,
init_params="kmeans", max_iter=10, tol=1e-2, reg_covar=5e-4)`` run on
min-max normalised losses (DivideMix's settings), but fits all classes in one
batched EM instead of a Python loop over classes, which is what makes it fast
enough for a million samples and a thousand classes:

* Classes are grouped into buckets of similar size and each bucket is laid
  out as a padded ``(classes, max_size)`` array; padding carries weight zero
  in every sum, so it never influences a fit.
* sklearn initialises with k-means (k-means++ seeding, then Lloyd).  In one
  dimension the optimal two-cluster split can be found exactly from a sorted
  copy and prefix sums; it is a fixed point of Lloyd's algorithm and is what
  sklearn's k-means reaches on ordinary data.  As in sklearn, the hard
  cluster assignments are the initial responsibilities.
* The EM steps, the lower bound (mean log-likelihood) and the stopping rule
  (``|change| < tol``, at most ``max_iter`` M-steps, one final E-step with the
  final parameters) follow sklearn step by step, per class: a class that has
  converged is frozen while the others keep iterating.

Edge cases (each is reported in ``GMMFit.status`` and tested):

* **Empty class** (no sample has that label): status ``"empty"``; it has no
  samples to score and is ignored by :func:`balanced_subsample`.
* **Too few samples** (fewer than two finite losses): a mixture cannot be
  fitted; status ``"too_few"``; a finite-loss sample of such a class gets
  ``clean_prob = 1.0`` -- there is no evidence against its label.
* **Constant losses** (all finite losses of a class are equal, zero spread):
  status ``"constant"``; every finite-loss sample gets ``clean_prob = 1.0``
  for the same reason.
* **Non-finite losses** (NaN, +inf, -inf): left out of the fit and given
  ``clean_prob = 0.0`` -- a sample the model cannot score is not trusted.
  Their number is ``GMMFit.n_nonfinite`` (the caller may log it).
* **Component order**: whichever order the two means come out in, the
  component with the lower mean is "clean" (column 0 of ``means``); with
  exactly equal means the first component is used, as ``argmin`` does.
* For classes that were not fitted, ``means``/``variances``/``weights`` are NaN
  and ``n_iter`` is 0.
* **N_min = 0**: see :func:`balanced_subsample` -- classes that have samples
  but no clean one are reported instead of forcing an empty subset.

Errors: invalid option values (``tau``, ``keep_fraction``, ``normalize``,
GMM settings) and labels outside ``[0, num_classes)`` raise
:class:`~noisyft.errors.UserError`; arrays of mismatched shape are a
programming error and raise ``ValueError``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from noisyft.errors import UserError

__all__ = [
    "GMMFit",
    "fit_per_class_gmm",
    "select_clean",
    "balanced_subsample",
    "selection_metrics",
    "small_loss_selection",
    "sklearn_per_class_gmm",
]

NORMALIZE_MODES = ("class", "global", "none")
_EPS10 = 10 * np.finfo(np.float64).eps  # sklearn adds this to every component's mass
_LOG_2PI = np.log(2 * np.pi)
# A bucket holds classes whose finite-sample counts are within this ratio of
# its largest, so padding wastes at most a third of the work in a bucket.
_BUCKET_RATIO = 1.5


@dataclass
class GMMFit:
    """Result of :func:`fit_per_class_gmm` for ``N`` samples and ``C`` classes.

    Attributes:
        clean_prob: ``(N,)`` float64 posterior of the low-mean ("clean")
            component of the sample's own class (see the module docstring for
            the values given to samples of classes that were not fitted).
        means: ``(C, 2)`` component means in original loss units; column 0 is
            the clean (lower-mean) component.  NaN for classes not fitted.
        variances: ``(C, 2)`` component variances in original loss units
            (``reg_covar`` included, scaled back like the data).
        weights: ``(C, 2)`` mixing weights, column 0 clean.
        status: per class, ``"fit"``, ``"empty"``, ``"too_few"`` or
            ``"constant"``.
        n_iter: ``(C,)`` number of EM iterations (M-steps) run; 0 if not fitted.
        converged: ``(C,)`` whether ``|change in lower bound| < tol`` was
            reached within ``max_iter`` iterations.
        n_nonfinite: number of samples with NaN or infinite loss (excluded
            from every fit, ``clean_prob`` 0.0).
    """

    clean_prob: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray
    status: list[str]
    n_iter: np.ndarray
    converged: np.ndarray
    n_nonfinite: int


# --------------------------------------------------------------------------
# input checks and per-class bookkeeping shared by both fitters
# --------------------------------------------------------------------------


def _check_losses_labels(losses, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(losses as float64, labels as int64)``, validated.

    Why: every function here indexes per-class arrays by label, so a label
    outside ``[0, num_classes)`` would be silently wrong or crash far away.
    """
    losses = np.asarray(losses, dtype=np.float64)
    labels = np.asarray(labels)
    if losses.ndim != 1 or labels.ndim != 1 or losses.shape != labels.shape:
        raise ValueError(
            f"losses and labels must be 1-D of equal length, got {losses.shape} and {labels.shape}"
        )
    labels = _check_labels(labels, num_classes)
    return losses, labels


def _check_num_classes(num_classes) -> int:
    """``num_classes`` as a Python int, or a UserError if it is not a positive integer."""
    try:
        ok = int(num_classes) == num_classes and num_classes >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    return int(num_classes)


def _check_labels(labels, num_classes: int, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as int64 after checking they lie in ``[0, num_classes)``."""
    labels = np.asarray(labels)
    num_classes = _check_num_classes(num_classes)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    if labels.size:
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            i = int(bad[0])
            raise UserError(
                f"{name}[{i}] = {int(labels[i])} is outside [0, {num_classes}) "
                f"({bad.size} such labels); check num_classes and the label column"
            )
    return labels


def _check_gmm_settings(max_iter: int, tol: float, reg_covar: float, normalize: str) -> None:
    """Reject GMM settings that would make the fit meaningless."""
    if int(max_iter) != max_iter or max_iter < 1:
        raise UserError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not tol >= 0:
        raise UserError(f"tol must be >= 0, got {tol!r}")
    if not reg_covar > 0:  # 0 lets a component collapse onto one value: log(0) variance
        raise UserError(f"reg_covar must be > 0, got {reg_covar!r}")
    if normalize not in NORMALIZE_MODES:
        raise UserError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}; got {normalize!r}")


@dataclass
class _Grouped:
    """Finite losses grouped by class: ``x[starts[c]:starts[c]+n_fin[c]]``."""

    order: np.ndarray  # original index of each grouped sample
    x: np.ndarray  # losses in grouped order
    starts: np.ndarray  # (C,)
    n_fin: np.ndarray  # (C,) finite samples per class
    counts: np.ndarray  # (C,) all samples per class
    finite: np.ndarray  # (N,) bool


def _group_by_class(losses: np.ndarray, labels: np.ndarray, num_classes: int) -> _Grouped:
    """Stable-sort the finite samples by label so each class is one segment.

    Why: one sort replaces ``C`` boolean scans over all ``N`` samples, and a
    narrow integer key lets numpy use its radix sort.
    """
    finite = np.isfinite(losses)
    fin_idx = np.flatnonzero(finite)
    key = labels[fin_idx]
    key = key.astype(np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32)
    order = fin_idx[np.argsort(key, kind="stable")]
    n_fin = np.bincount(labels[fin_idx], minlength=num_classes)
    starts = np.zeros(num_classes, dtype=np.int64)
    np.cumsum(n_fin[:-1], out=starts[1:])
    counts = np.bincount(labels, minlength=num_classes)
    return _Grouped(order, losses[order], starts, n_fin, counts, finite)


def _class_min_max(g: _Grouped) -> tuple[np.ndarray, np.ndarray]:
    """Per-class min and max of the finite losses (NaN where a class has none)."""
    c = g.n_fin.size
    lo = np.full(c, np.nan)
    hi = np.full(c, np.nan)
    has = g.n_fin > 0
    if has.any():
        lo[has] = np.minimum.reduceat(g.x, g.starts[has])
        hi[has] = np.maximum.reduceat(g.x, g.starts[has])
    return lo, hi


def _class_status(g: _Grouped, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per-class status string array: fit / empty / too_few / constant."""
    status = np.full(g.n_fin.size, "fit", dtype=object)
    status[(g.n_fin >= 2) & (lo == hi)] = "constant"
    status[g.n_fin < 2] = "too_few"
    status[g.counts == 0] = "empty"
    return status


def _normalisation(normalize: str, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class ``(shift, scale)`` so that the fitted data is ``(x - shift) / scale``.

    ``"class"`` min-max normalises each class on its own finite losses (the
    default: a class the model finds hard as a whole should still split into
    its own easy and hard samples); ``"global"`` uses the min and max over all
    finite losses (DivideMix's choice); ``"none"`` fits raw losses.  Only
    classes with positive spread are ever fitted, so scales used are > 0.
    """
    c = lo.size
    if normalize == "class":
        return lo.copy(), hi - lo
    if normalize == "global":
        if np.isnan(lo).all():
            return np.zeros(c), np.ones(c)
        gmin, gmax = np.nanmin(lo), np.nanmax(hi)
        scale = gmax - gmin if gmax > gmin else 1.0
        return np.full(c, gmin), np.full(c, scale)
    return np.zeros(c), np.ones(c)


def _default_clean_prob(g: _Grouped) -> np.ndarray:
    """1.0 for finite losses (overwritten for fitted classes), 0.0 otherwise."""
    return g.finite.astype(np.float64)


# --------------------------------------------------------------------------
# the batched EM
# --------------------------------------------------------------------------


def _size_buckets(n_fin: np.ndarray, classes: np.ndarray) -> list[np.ndarray]:
    """Split ``classes`` into groups of similar sample count (largest first).

    Why: a padded ``(classes, max_count)`` layout lets every EM step be a
    handful of whole-array numpy operations, but a single small class padded
    to the size of a huge one would waste memory and time; bucketing bounds
    the padding to ``1 - 1/_BUCKET_RATIO`` of each bucket.
    """
    if classes.size == 0:
        return []
    cls = classes[np.argsort(-n_fin[classes], kind="stable")]
    sizes = n_fin[cls]
    buckets, first = [], 0
    for i in range(1, cls.size + 1):
        if i == cls.size or sizes[i] * _BUCKET_RATIO < sizes[first]:
            buckets.append(cls[first:i])
            first = i
    return buckets


def _pad_bucket(g: _Grouped, cls: np.ndarray, shift: np.ndarray, scale: np.ndarray):
    """Lay out the normalised losses of ``cls`` as ``F = [mask, x, x**2]``.

    Returns ``(F, rows, cols, src)`` where ``F`` is ``(k, 3, m)``; padding has
    mask 0 and x 0, so multiplying by ``F`` zeroes it out of every sum, and
    ``src`` maps each real cell ``(rows, cols)`` back to the grouped order.
    """
    n = g.n_fin[cls]
    k, m, total = cls.size, int(n.max()), int(n.sum())
    rows = np.repeat(np.arange(k), n)
    first = np.zeros(k, dtype=np.int64)
    np.cumsum(n[:-1], out=first[1:])
    cols = np.arange(total) - np.repeat(first, n)
    src = np.repeat(g.starts[cls], n) + cols
    x = (g.x[src] - np.repeat(shift[cls], n)) / np.repeat(scale[cls], n)
    F = np.zeros((k, 3, m))
    F[rows, 0, cols] = 1.0
    F[rows, 1, cols] = x
    np.multiply(F[:, 1], F[:, 1], out=F[:, 2])
    return F, rows, cols, src


def _kmeans_split(F: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Hard 2-means responsibilities ``(k, 2, m)`` from the optimal 1-D split.

    Sorting each class and maximising the between-cluster sum of squares over
    all split points gives the exact 2-means optimum; splits between equal
    values are not allowed, so equal losses always share a cluster (as
    nearest-centre assignment would give).  Cluster 0 holds the smaller values.
    """
    k, _, m = F.shape
    valid = F[:, 0] > 0
    s = np.where(valid, F[:, 1], np.inf)
    s.sort(axis=1)
    s_fin = np.where(np.isfinite(s), s, 0.0)
    cs = np.cumsum(s_fin, axis=1)[:, :-1]  # sum of the left part for a split after j
    total = s_fin.sum(axis=1, keepdims=True)
    n_left = np.arange(1, m, dtype=np.float64)[None, :]
    n_right = n[:, None].astype(np.float64) - n_left
    ok = (n_right > 0) & (s[:, :-1] < s[:, 1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        between = cs * cs / n_left + (total - cs) ** 2 / n_right
    between[~ok] = -np.inf
    j = np.argmax(between, axis=1)
    thr = s[np.arange(k), j]
    resp = np.empty((k, 2, m))
    np.less_equal(F[:, 1], thr[:, None], out=resp[:, 0])
    np.subtract(1.0, resp[:, 0], out=resp[:, 1])
    return resp


def _params_from_sums(sums: np.ndarray, n: np.ndarray, reg_covar: float, m_step: bool):
    """sklearn's ``_estimate_gaussian_parameters`` from weighted sums.

    ``sums[:, k, :]`` holds ``(sum r, sum r*x, sum r*x**2)`` of component k
    over the real samples.  Returns ``(weights, means, variances)``, each
    ``(rows, 2)``.  The variance is ``sum r (x - mean)**2 / nk + reg_covar``
    expanded, with ``nk = sum r + 10 eps`` exactly as sklearn does.
    """
    s, sx, sxx = sums[:, :, 0], sums[:, :, 1], sums[:, :, 2]
    nk = s + _EPS10
    means = sx / nk
    var = (sxx - 2.0 * means * sx + means * means * s) / nk
    var = np.maximum(var, 0.0) + reg_covar
    # sklearn: initial weights are nk / n_samples, after an M-step nk / sum(nk)
    weights = nk / (n[:, None] if not m_step else nk.sum(axis=1, keepdims=True))
    return weights, means, var


def _log_coeffs(weights: np.ndarray, means: np.ndarray, var: np.ndarray):
    """Coefficients of ``log(w_k N(x; mu_k, var_k)) = a_k + b_k x + c_k x**2``."""
    a = np.log(weights) - 0.5 * (_LOG_2PI + np.log(var)) - 0.5 * means * means / var
    b = means / var
    c = -0.5 / var
    return a, b, c


def _e_step(F: np.ndarray, a, b, c, out: np.ndarray) -> None:
    """Fill ``out`` (k, 3, m) with ``[resp_0, resp_1, log(1 + exp(d))]``.

    ``d = log p_1(x) - log p_0(x)`` is quadratic in x, so the two-component
    log-sum-exp reduces to ``log p_0 + softplus(d)`` and the posteriors to
    ``exp(-softplus(d))`` and ``exp(d - softplus(d))``.  ``np.logaddexp`` is
    ~20x slower than ``exp``/``log1p`` here, hence the hand-written softplus
    (exact in float64: ``softplus(d) == d`` for ``d >= 700``).
    """
    da, db, dc = (a[:, 1] - a[:, 0])[:, None], (b[:, 1] - b[:, 0])[:, None], (c[:, 1] - c[:, 0])[:, None]
    d, r0, sp = out[:, 1], out[:, 0], out[:, 2]
    np.multiply(F[:, 2], dc, out=d)
    np.multiply(F[:, 1], db, out=r0)  # r0 used as scratch
    d += r0
    d += da
    np.minimum(d, 700.0, out=r0)
    np.exp(r0, out=sp)
    np.log1p(sp, out=sp)
    np.subtract(d, r0, out=r0)  # d - min(d, 700): 0 except for huge d
    sp += r0
    np.subtract(d, sp, out=d)
    np.exp(d, out=d)  # resp_1
    np.negative(sp, out=r0)
    np.exp(r0, out=r0)  # resp_0


def _weighted_sums(resp: np.ndarray, F: np.ndarray) -> np.ndarray:
    """``resp @ F.T`` per class: (k, 3, 3) sums over the real (mask 1) samples."""
    return np.matmul(resp, F.transpose(0, 2, 1))


def _em_bucket(F: np.ndarray, n: np.ndarray, max_iter: int, tol: float, reg_covar: float):
    """Run sklearn-equivalent EM on every class (row) of a padded bucket.

    Returns ``(weights, means, variances, n_iter, converged, resp)`` where
    ``resp`` is the final E-step's ``(k, 2, m)`` posteriors.
    """
    k = F.shape[0]
    nf = n.astype(np.float64)
    tot_x = F[:, 1].sum(axis=1)
    tot_xx = F[:, 2].sum(axis=1)
    resp = _kmeans_split(F, n)
    weights, means, var = _params_from_sums(_weighted_sums(resp, F), nf, reg_covar, False)
    del resp
    n_iter = np.zeros(k, dtype=np.int64)
    converged = np.zeros(k, dtype=bool)
    lower = np.full(k, -np.inf)
    ids = np.arange(k)  # rows still iterating
    Fa, buf = F, np.empty(F.shape)
    for _ in range(max_iter):
        a, b, c = _log_coeffs(weights[ids], means[ids], var[ids])
        _e_step(Fa, a, b, c, out=buf)
        sums = _weighted_sums(buf, Fa)
        # sklearn's lower bound, the mean of log(sum_k w_k N_k(x)) = log p_0(x) + softplus(d):
        # the first term in closed form from the class's sums of x and x**2
        new_lower = (a[:, 0] * nf[ids] + b[:, 0] * tot_x[ids] + c[:, 0] * tot_xx[ids] + sums[:, 2, 0]) / nf[ids]
        weights[ids], means[ids], var[ids] = _params_from_sums(sums[:, :2], nf[ids], reg_covar, True)
        n_iter[ids] += 1
        done = np.abs(new_lower - lower[ids]) < tol
        lower[ids] = new_lower
        if done.any():
            converged[ids[done]] = True
            keep = ~done
            if not keep.any():
                break
            ids, Fa = ids[keep], Fa[keep]
            buf = np.empty(Fa.shape)
    a, b, c = _log_coeffs(weights, means, var)
    if buf.shape != F.shape:
        buf = np.empty(F.shape)
    _e_step(F, a, b, c, out=buf)
    return weights, means, var, n_iter, converged, buf


def _prepare(losses, labels, num_classes: int, max_iter, tol, reg_covar, normalize: str):
    """What both fits share: checked inputs grouped by class, each class's status, the normalisation
    ``(shift, scale)`` and the clean posterior of samples no fit will score (:func:`_default_clean_prob`)."""
    losses, labels = _check_losses_labels(losses, labels, num_classes)
    _check_gmm_settings(max_iter, tol, reg_covar, normalize)
    g = _group_by_class(losses, labels, num_classes)
    lo, hi = _class_min_max(g)
    status = _class_status(g, lo, hi)
    shift, scale = _normalisation(normalize, lo, hi)
    return g, status, shift, scale, _default_clean_prob(g)


def fit_per_class_gmm(
    losses,
    labels,
    num_classes: int,
    *,
    max_iter: int = 10,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
    normalize: str = "class",
) -> GMMFit:
    """Fit a two-component 1-D GMM to each class's losses, all classes at once.

    Args:
        losses: ``(N,)`` per-sample losses (any float dtype; NaN/inf allowed).
        labels: ``(N,)`` given (possibly noisy) labels in ``[0, num_classes)``.
        num_classes: number of classes ``C``.
        max_iter, tol, reg_covar: as in ``sklearn.mixture.GaussianMixture``;
            the defaults are DivideMix's (10, 1e-2, 5e-4).  ``reg_covar`` is
            in normalised units when normalising.
        normalize: ``"class"`` (min-max per class, default), ``"global"``
            (min-max over all finite losses, as DivideMix) or ``"none"``.

    Returns:
        A :class:`GMMFit`; ``clean_prob`` is what :func:`select_clean` takes.

    Why batched: a per-class sklearn loop costs milliseconds per class in
    Python overhead (k-means, validation); one vectorised EM over padded
    buckets fits a million losses over a thousand classes in well under a
    second while matching sklearn's result (see ``benchmarks/gmm_speed.py``).
    """
    num_classes = _check_num_classes(num_classes)
    g, status, shift, scale, clean_prob = _prepare(losses, labels, num_classes, max_iter, tol, reg_covar, normalize)
    C = num_classes
    means = np.full((C, 2), np.nan)
    variances = np.full((C, 2), np.nan)
    weights = np.full((C, 2), np.nan)
    n_iter = np.zeros(C, dtype=np.int64)
    converged = np.zeros(C, dtype=bool)

    fit_classes = np.flatnonzero(status == "fit")
    for cls in _size_buckets(g.n_fin, fit_classes):
        F, rows, cols, src = _pad_bucket(g, cls, shift, scale)
        w, mu, var, it, conv, resp = _em_bucket(F, g.n_fin[cls], int(max_iter), float(tol), float(reg_covar))
        swap = mu[:, 1] < mu[:, 0]  # the low-mean component is clean
        clean_col = swap.astype(np.int64)
        clean_prob[g.order[src]] = resp[rows, clean_col[rows], cols]
        order = np.stack([clean_col, 1 - clean_col], axis=1)
        pick = np.arange(cls.size)[:, None]
        sc, sh = scale[cls][:, None], shift[cls][:, None]
        with np.errstate(over="ignore"):  # losses spanning > 1e154 give inf variances, not an error
            means[cls] = sh + mu[pick, order] * sc
            variances[cls] = var[pick, order] * sc * sc
        weights[cls] = w[pick, order]
        n_iter[cls], converged[cls] = it, conv

    return GMMFit(
        clean_prob=clean_prob,
        means=means,
        variances=variances,
        weights=weights,
        status=[str(s) for s in status],
        n_iter=n_iter,
        converged=converged,
        n_nonfinite=int((~g.finite).sum()),
    )


# --------------------------------------------------------------------------
# the reference loop
# --------------------------------------------------------------------------


def sklearn_per_class_gmm(
    losses,
    labels,
    num_classes: int,
    *,
    max_iter: int = 10,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
    normalize: str = "class",
    random_state: int | None = 0,
) -> np.ndarray:
    """Reference: one ``sklearn.mixture.GaussianMixture`` per class, in a loop.

    Same preprocessing and edge-case rules as :func:`fit_per_class_gmm` (so
    the two differ only in the fit), sklearn's default ``init_params="kmeans"``
    seeded with ``random_state`` for every class.  Returns ``clean_prob``
    ``(N,)``: the posterior of ``means_.argmin()``, exactly as DivideMix.
    Used by the tests and ``benchmarks/gmm_speed.py``; slow by design.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    num_classes = _check_num_classes(num_classes)
    g, status, shift, scale, clean_prob = _prepare(losses, labels, num_classes, max_iter, tol, reg_covar, normalize)
    for c in np.flatnonzero(status == "fit"):
        seg = slice(g.starts[c], g.starts[c] + g.n_fin[c])
        x = ((g.x[seg] - shift[c]) / scale[c])[:, None]
        gmm = GaussianMixture(
            n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=random_state
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm.fit(x)
        clean_prob[g.order[seg]] = gmm.predict_proba(x)[:, gmm.means_.argmin()]
    return clean_prob


# --------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------


def select_clean(clean_prob, tau: float = 0.6) -> np.ndarray:
    """Boolean mask of samples whose clean posterior is strictly greater than ``tau``.

    Strict so that ``tau = 0.5`` does not select samples the mixture is
    undecided about; NaN probabilities are never selected.
    """
    if not 0.0 <= tau <= 1.0:
        raise UserError(f"tau must be in [0, 1], got {tau!r}")
    return np.asarray(clean_prob, dtype=np.float64) > tau


def balanced_subsample(
    clean_mask, labels, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, int, list[int]]:
    """Draw the same number of clean samples from every class.

    ``n_min`` is the smallest number of clean samples over the classes that
    have at least one; ``n_min`` samples are drawn uniformly without
    replacement from each such class's clean samples.  Why this rule: a class
    whose every sample looks noisy would otherwise force ``n_min = 0`` and an
    empty training set; such classes (samples present, none clean) are
    returned in ``classes_with_no_clean`` so the caller can warn, and
    contribute nothing.  Classes with no samples at all are ignored.  If no
    class has a clean sample the result is ``(empty, 0, classes)``.

    Returns:
        ``(indices, n_min, classes_with_no_clean)`` with ``indices`` sorted
        ascending (int64) and ``classes_with_no_clean`` sorted.
    """
    num_classes = _check_num_classes(num_classes)
    clean_mask = np.asarray(clean_mask)
    labels = _check_labels(labels, num_classes)
    if clean_mask.dtype != bool or clean_mask.shape != labels.shape or labels.ndim != 1:
        raise ValueError(
            f"clean_mask must be a boolean array shaped like labels, got {clean_mask.dtype} "
            f"{clean_mask.shape} and {labels.shape}"
        )
    counts = np.bincount(labels, minlength=num_classes)
    clean_counts = np.bincount(labels[clean_mask], minlength=num_classes)
    no_clean = [int(c) for c in np.flatnonzero((counts > 0) & (clean_counts == 0))]
    has_clean = clean_counts > 0
    if not has_clean.any():
        return np.zeros(0, dtype=np.int64), 0, no_clean
    n_min = int(clean_counts[has_clean].min())
    # A uniform random subset of size n_min per class without a Python loop:
    # order each class's clean samples by an i.i.d. uniform key, keep the first n_min.
    clean_idx = np.flatnonzero(clean_mask)
    cls = labels[clean_idx]
    order = np.lexsort((rng.random(clean_idx.size), cls))
    starts = np.concatenate(([0], np.cumsum(clean_counts)[:-1]))
    rank = np.arange(order.size) - starts[cls[order]]
    return np.sort(clean_idx[order[rank < n_min]]), n_min, no_clean


def selection_metrics(selected, given_labels, true_labels) -> dict:
    """How good a selection is, when the true labels are known (benchmarks).

    Args:
        selected: boolean mask ``(N,)`` or integer indices of selected samples.
        given_labels, true_labels: ``(N,)``; a sample is truly clean when they agree.

    Returns:
        ``{"count", "n_clean", "precision", "recall", "f1"}`` (``count``: distinct
        selected samples; ``n_clean``: truly clean samples): precision is the
        fraction of selected samples whose given label is right, recall the
        fraction of truly clean samples that were selected, f1 their harmonic
        mean; each is 0.0 when its denominator is zero.
    """
    given = np.asarray(given_labels)
    true = np.asarray(true_labels)
    if given.shape != true.shape or given.ndim != 1:
        raise ValueError(f"given_labels and true_labels must be 1-D of equal length, got {given.shape} and {true.shape}")
    mask = _as_mask(selected, given.size)
    clean = given == true
    count = int(mask.sum())
    n_clean = int(clean.sum())
    hits = int((mask & clean).sum())
    precision = hits / count if count else 0.0
    recall = hits / n_clean if n_clean else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"count": count, "n_clean": n_clean, "precision": precision, "recall": recall, "f1": f1}


def _as_mask(selected, n: int) -> np.ndarray:
    """Turn a boolean mask or an index array into a boolean mask of length ``n``."""
    sel = np.asarray(selected)
    if sel.dtype == bool:
        if sel.shape != (n,):
            raise ValueError(f"boolean selection must have shape ({n},), got {sel.shape}")
        return sel
    if sel.size and not np.issubdtype(sel.dtype, np.integer):
        raise ValueError(f"selection must be a boolean mask or integer indices, got dtype {sel.dtype}")
    idx = sel.astype(np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"selected indices must lie in [0, {n})")
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return mask


def small_loss_selection(losses, labels, num_classes: int, keep_fraction: float) -> np.ndarray:
    """Keep the lowest-loss ``keep_fraction`` of each class (small-loss baseline).

    Per class, ``k_c = floor(keep_fraction * n_c + 0.5)`` samples are kept
    (``n_c`` = samples labelled c, rounding half up), taken in increasing loss
    order; ties are broken by sample index so the result is deterministic.
    Non-finite losses are never kept, so ``k_c`` is capped at the class's
    number of finite losses.  Per-class (not global) so that a class the model
    finds hard is not dropped wholesale.
    """
    num_classes = _check_num_classes(num_classes)
    losses, labels = _check_losses_labels(losses, labels, num_classes)
    if not 0.0 <= keep_fraction <= 1.0:
        raise UserError(f"keep_fraction must be in [0, 1], got {keep_fraction!r}")
    finite = np.isfinite(losses)
    counts = np.bincount(labels, minlength=num_classes)
    n_fin = np.bincount(labels[finite], minlength=num_classes)
    keep = np.minimum(np.floor(keep_fraction * counts + 0.5).astype(np.int64), n_fin)
    ranked_loss = np.where(finite, losses, np.inf)
    order = np.lexsort((np.arange(losses.size), ranked_loss, labels))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(losses.size, dtype=np.int64)
    rank[order] = np.arange(losses.size) - starts[labels[order]]
    return (rank < keep[labels]) & finite
