"""``python -m tests.dist_methods DATA OUT STATE METHOD[,METHOD…]``: fit each method on DATA, one after another in
this process (alone or as one rank of a ``torchrun`` group: one launch, one process group, for every method).

Each method's run goes to ``OUT/<method>``. After each fit this rank saves the per-sample state its training loss
kept (ELR's running targets of ``elr-fft``, ``consensus``'s RefurbishedTargets buffers) to
``STATE/<method>.rank<R>.npz``, so the data-parallel tests can check every rank holds one process's state.
With ``$NOISYFT_TEST_AUDIT`` set, :mod:`tests.dist_audit`'s hook records this rank's writes under
``$NOISYFT_TEST_WATCH``. Tiny settings: 2 LP and 2 fine-tuning epochs, warm-ups of 1 so selections run; DEFT and
clip-label-match detect with the CLIP saved at ``$NOISYFT_TEST_CLIP``.
"""
import os
import sys
from pathlib import Path

if os.environ.get("NOISYFT_TEST_AUDIT"):
    import tests.dist_audit  # noqa: F401  (installs the audit hook)

import numpy as np

COMMON = dict(backbone="test_vit", pretrained=False, image_size=32, epochs_lp=2, epochs_fft=2, batch_size=16,
              num_workers=0, progress=False, noise="sym:0.4", seed=7, augment="none")
EXTRA = {"small-loss-lp": {"warmup": 1}, "small-loss-fft": {"warmup_fft": 1}, "unicon-lp": {"warmup": 1},
         "dividemix-lp": {"warmup": 1}, "cleanlab": {"folds": 2}, "cleanlab-fft": {"folds": 2},
         "consensus": {"folds": 2}, "consensus-detect": {"folds": 2}, "unicon-lp-img": {"warmup": 1},
         "dividemix-lp-img": {"warmup": 1},
         # DEFT's detector: the tiny random CLIP of $NOISYFT_TEST_CLIP (tests/test_deft.py's make_tiny_clip),
         # 2 detector epochs (warm-up, then the clean rule) of 5 batches of 16, the last one short
         "deft": {"detect_epochs": 2, "warmup": 1, "detect_batch_size": 16, "n_ctx": 4, "vpt_tokens": 4, "lr": 0.003},
         "clip-label-match": {}}
CLIP_METHODS = ("deft", "clip-label-match")
# a validation split smaller than one batch (7 images): one rank of two evaluates none of it; consensus-detect's
# verdict chooses its noise model on it (every rank must choose the same)
CONFIG = {"deft": {"val_fraction": 0.1}, "clip-label-match": {"val_fraction": 0.1}, "consensus-detect": {"val_fraction": 0.1}}


def main(data: str, out: str, state: str, methods: str) -> None:
    from noisyft import api, dist
    from noisyft.losses import ELR
    from noisyft.methods.consensus import RefurbishedTargets

    made: list = []
    for cls in (ELR, RefurbishedTargets):
        init = cls.__init__

        def spy(self, *a, _init=init, **kw):
            _init(self, *a, **kw)
            made.append(self)

        cls.__init__ = spy
    Path(state).mkdir(parents=True, exist_ok=True)
    for method in methods.split(","):
        made.clear()
        extra = {**EXTRA.get(method, {}), **({"clip": os.environ["NOISYFT_TEST_CLIP"]} if method in CLIP_METHODS else {})}
        api.fit(data=data, out=str(Path(out) / method), method=method, extra=extra, **{**COMMON, **CONFIG.get(method, {})})
        kept = [m for m in made if isinstance(m, RefurbishedTargets)] or made  # the training loss: the last one made
        if kept:
            arrays = {k: v.cpu().numpy() for k, v in kept[-1].state_dict().items()}
            np.savez(Path(state) / f"{method}.rank{dist.rank()}.npz", **arrays)
    dist.destroy()


if __name__ == "__main__":
    main(*sys.argv[1:5])
