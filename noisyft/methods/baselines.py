"""Single-loss baselines on the same engine: ``<loss>-lp`` and ``<loss>-fft``.

``-lp`` trains a linear head on cached features for E_LP epochs (20 in the
paper); ``-fft`` fine-tunes the whole model (head initialised fresh) on every
training sample for ``--epochs-fft`` epochs (default 5, the TURN paper's
baseline budget), with the same augmentation as TURN. GCE's q is the top-level
``gce_q`` (one value for TURN and the GCE baselines); SCE's α/β and ELR's β/λ
are method settings (``--extra``; ELR's defaults follow the dataset, see
:func:`noisyft.methods.settings.dataset_defaults`).
"""
from __future__ import annotations

from dataclasses import dataclass

from noisyft.engine import head_logits
from noisyft.losses import create_loss
from noisyft.methods.base import GMM_LABEL_QUALITY, Context, MethodOutput, label_quality_doc
from noisyft.methods.linear_probe import linear_probe
from noisyft.methods.registry import METHODS
from noisyft.methods.settings import MethodSettings, NoSettings
from noisyft.options import NON_NEGATIVE, Range, option

BASELINE_FFT_EPOCHS = 5  # the TURN paper's fine-tuning budget for the -fft baselines


@dataclass(frozen=True)
class SCESettings(MethodSettings):
    """Symmetric cross-entropy: α·CE + β·RCE."""

    alpha: float = option(1.0, "weight α of the cross-entropy term", range=NON_NEGATIVE)
    beta: float = option(1.0, "weight β of the reverse cross-entropy term", range=NON_NEGATIVE)


@dataclass(frozen=True)
class ELRSettings(MethodSettings):
    """Early-learning regularisation: CE + λ·mean(log(1 − ⟨t, p⟩)), targets t a running mean with momentum β."""

    beta: float = option(0.7, "target momentum β (0.9 on CIFAR-100, the ELR paper's values)", range=Range(0, 1, high_open=True))
    lam: float = option(3.0, "regularisation weight λ (7 on CIFAR-100)", range=NON_NEGATIVE)


def _fft_settings(base: type) -> type:
    """``base`` with the baselines' fine-tuning budget as the method's default."""
    return dataclass(frozen=True)(type(f"{base.__name__}FFT", (base,), {"EPOCHS_FFT": BASELINE_FFT_EPOCHS,
                                                                         "__doc__": base.__doc__}))


_SETTINGS = {"ce": NoSettings, "gce": NoSettings, "sce": SCESettings, "elr": ELRSettings}


def _loss_kwargs(ctx: Context, loss: str) -> dict:
    """The loss's parameters: GCE's q from ``gce_q``, the others from the method's settings."""
    if loss == "gce":
        return {"q": ctx.cfg.gce_q}
    return {f: getattr(ctx.settings, f) for f in ("alpha", "beta", "lam") if hasattr(ctx.settings, f)}


def _lp(loss: str):
    def run(ctx: Context) -> MethodOutput:
        head = linear_probe(ctx, loss, ctx.cfg.epochs_lp, **_loss_kwargs(ctx, loss))
        return MethodOutput(model=ctx.classifier(head), train_logits=head_logits(head, ctx.features("train"), ctx.device))

    run.__doc__ = f"{loss.upper()} linear probing on cached features."
    return run


def _fft(loss: str):
    def run(ctx: Context) -> MethodOutput:
        model, opt = ctx.fresh_model()
        loss_fn = create_loss(loss, num_examples=len(ctx.train), num_classes=ctx.num_classes, **_loss_kwargs(ctx, loss)).to(ctx.device)
        epochs = ctx.epochs_fft
        everyone = range(len(ctx.train))
        start = ctx.resume("fft", model=model, opt=opt, loss=loss_fn)
        for epoch in range(start + 1, epochs + 1):
            ctx.fine_tune_epoch(model, everyone, loss_fn, opt, epoch, epochs, states={"model": model, "opt": opt, "loss": loss_fn})
        with ctx.run.phase("selection"):
            logits = ctx.image_logits(model, "train", desc="losses:train")
        return MethodOutput(model=model, train_logits=logits)

    run.__doc__ = f"{loss.upper()} full fine-tuning of the whole model."
    return run


for _loss, _cls in _SETTINGS.items():
    METHODS.register(f"{_loss}-lp", settings=_cls)(label_quality_doc(GMM_LABEL_QUALITY)(_lp(_loss)))
    METHODS.register(f"{_loss}-fft", settings=_fft_settings(_cls))(label_quality_doc(GMM_LABEL_QUALITY)(_fft(_loss)))
