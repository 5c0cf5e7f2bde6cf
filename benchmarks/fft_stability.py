"""Why EfficientNet-Lite0 fine-tunes with AdamW 1e-4 and frozen BatchNorm statistics.

On the demo's training data at 96 px (10 % held out as a noisy validation split):
train a CE linear head on cached features for 6 epochs, then fine-tune the whole
model for one epoch on the truly clean training samples with a given optimiser,
BatchNorm mode and augmentation, and print the noisy-validation accuracy before
and after plus the per-step training loss. Uses training labels only, never test.

    python benchmarks/fft_stability.py adamw,1e-3,1,none adamw,1e-4,1,flip-affine sgd,1e-2,1,flip-affine adamw,1e-4,0,flip-affine

Each argument is optimiser,lr,freeze_bn(1/0),augmentation.
"""
import sys

import numpy as np
import torch

from noisyft import api
from noisyft.config import FitConfig
from noisyft.backbones import create_backbone, Classifier
from noisyft.config import OptimConfig
from noisyft.engine import image_logits, accuracy, train_image_epoch, generator, head_logits
from noisyft.data.transforms import eval_transform, train_transform
from noisyft.features.cache import extract_features
cfg = FitConfig(**{**api.DEMO, "image_size": 96, "val_fraction": 0.1})
splits, val, _ = api.prepare_data(cfg)
dev = torch.device("cpu")
def run(optc, freeze, aug="flip-affine"):
    torch.manual_seed(0)
    bb = create_backbone("efficientnet_lite0", image_size=96)
    m = Classifier(bb, 10).to(memory_format=torch.channels_last)
    f = torch.from_numpy(np.array(extract_features(bb, splits.train.source, progress=False)))
    y = torch.as_tensor(splits.train.labels); tl = splits.train.true_labels
    o = torch.optim.AdamW(m.head.parameters(), 1e-3, weight_decay=1e-5)
    for e in range(6):
        for i in torch.randperm(len(f)).split(128):
            l = torch.nn.functional.cross_entropy(m.head(f[i]), y[i]); o.zero_grad(); l.backward(); o.step()
    lg = head_logits(m.head, f, dev)
    clean = np.flatnonzero(splits.train.labels == tl)  # oracle clean subset to isolate optimisation
    ce = torch.nn.functional.cross_entropy(lg[clean], y[clean]).item()
    ev = eval_transform(bb.preprocess)
    v0 = accuracy(image_logits(m, val, ev, device=dev, progress=False), val.labels)
    opt = optc.build(m.parameters())
    losses = []
    class L(torch.nn.Module):
        def forward(s, a, b, c): l = torch.nn.functional.cross_entropy(a, b); losses.append(round(l.item(), 2)); return l
    train_image_epoch(m, splits.train, clean, train_transform(bb.preprocess, aug), L(), opt, device=dev, gen=generator(0, 1), epoch=1, progress=False, freeze_bn_stats=freeze)
    v1 = accuracy(image_logits(m, val, ev, device=dev, progress=False), val.labels)
    print(optc, "freeze", freeze, aug, "LP CE on clean", round(ce, 3), "val", round(v0, 3), "->", round(v1, 3), "step losses", losses, flush=True)
for a in sys.argv[1:]:
    n, lr, fr, aug = a.split(",")
    run(OptimConfig(n, float(lr), 1e-5), fr == "1", aug)
