"""Single-loss baselines on the same engine: ``<loss>-lp`` and ``<loss>-fft``.

``-lp`` trains a linear head on cached features for E_LP epochs (20 in the
paper); ``-fft`` fine-tunes the whole model (head initialised fresh) on every
training sample for the baseline FFT budget (``extra.baseline_fft_epochs``, 5
in the paper), with the same augmentation as TURN.
"""
from __future__ import annotations


from noisyft.engine import head_logits
from noisyft.losses import create_loss
from noisyft.methods.base import GMM_LABEL_QUALITY, Context, MethodOutput, label_quality_doc
from noisyft.methods.linear_probe import linear_probe
from noisyft.methods.registry import METHODS

BASELINE_FFT_EPOCHS = 5
_LOSS_KW = {"ce": {}, "gce": {"q": 0.7}, "sce": {}, "elr": {}}


def _loss_kwargs(ctx: Context, loss: str) -> dict:
    return {**_LOSS_KW[loss], **{k: v for k, v in ctx.cfg.extra.items() if k in ("q", "alpha", "beta", "lam")}}


def _lp(loss: str):
    def run(ctx: Context) -> MethodOutput:
        head = linear_probe(ctx, loss, ctx.cfg.epochs_lp, **_loss_kwargs(ctx, loss))
        return MethodOutput(model=ctx.classifier(head), train_logits=head_logits(head, ctx.features("train"), ctx.device))

    run.__doc__ = f"{loss.upper()} linear probing on cached features."
    return run


def _fft(loss: str):
    def run(ctx: Context) -> MethodOutput:
        cfg = ctx.cfg
        model, opt = ctx.fresh_model()
        loss_fn = create_loss(loss, num_examples=len(ctx.train), num_classes=ctx.num_classes, **_loss_kwargs(ctx, loss)).to(ctx.device)
        epochs = int(cfg.extra.get("baseline_fft_epochs", BASELINE_FFT_EPOCHS))
        everyone = range(len(ctx.train))
        start = ctx.resume("fft", model=model, opt=opt, loss=loss_fn)
        for epoch in range(start + 1, epochs + 1):
            ctx.fine_tune_epoch(model, everyone, loss_fn, opt, epoch, epochs, states={"model": model, "opt": opt, "loss": loss_fn})
        with ctx.run.phase("selection"):
            logits = ctx.image_logits(model, "train", desc="losses:train")
        return MethodOutput(model=model, train_logits=logits)

    run.__doc__ = f"{loss.upper()} full fine-tuning of the whole model."
    return run


for _loss in _LOSS_KW:
    METHODS.register(f"{_loss}-lp")(label_quality_doc(GMM_LABEL_QUALITY)(_lp(_loss)))
    METHODS.register(f"{_loss}-fft")(label_quality_doc(GMM_LABEL_QUALITY)(_fft(_loss)))
