"""On CUDA every pass keeps one batch shape (cuDNN compiles kernels for each new one): training epochs in full
batches, eval batches padded; the same rows come out, and the CPU path is untouched."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from noisyft import engine
from noisyft.data.base import LabeledSet
from noisyft.data.inputs import open_images
from noisyft.features.loader import FullBatches, fixed_shapes, forward_features
from noisyft.losses import CE


def test_only_cuda_keeps_fixed_shapes():
    assert fixed_shapes(torch.device("cuda")) and fixed_shapes(torch.device("cuda", 1))
    assert not fixed_shapes(torch.device("cpu"))


@pytest.mark.parametrize("n, b", [(10, 4), (8, 4), (13, 5), (3, 4), (4, 4), (2, 8)])
def test_full_batches_cover_every_sample_in_batches_of_one_size(n, b):
    batches = list(FullBatches(n, b, torch.Generator().manual_seed(n)))
    assert len(batches) == len(FullBatches(n, b, torch.Generator()))
    assert {len(x) for x in batches} == {min(n, b)}  # one shape: full batches, or all samples when fewer than one
    assert all(len(set(x)) == len(x) for x in batches)  # no sample twice in one batch
    seen = [i for x in batches for i in x]
    assert set(seen) == set(range(n)) and len(seen) == -(-n // b) * min(n, b)
    assert seen[:n] == torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist()  # the shuffled epoch first
    assert batches == list(FullBatches(n, b, torch.Generator().manual_seed(n)))  # seeded


def test_a_lone_sample_is_not_a_batch():
    assert list(FullBatches(1, 4, torch.Generator())) == [] and len(FullBatches(1, 4, torch.Generator())) == 0


def test_padded_eval_rows_equal_the_unpadded_ones():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, groups=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 4, 3, groups=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    model[1].running_mean.normal_()
    model.eval()
    x = torch.randn(5, 3, 12, 12)
    cpu = torch.device("cpu")
    plain, padded = forward_features(model, x, cpu), forward_features(model, x, cpu, pad_to=16)
    assert padded.shape == plain.shape == (5, 4)
    assert torch.allclose(padded, plain, atol=1e-6)
    assert torch.equal(forward_features(model, x, cpu, pad_to=3), plain)  # a full batch is not cut


@pytest.fixture
def spied_epoch(image_tree, monkeypatch):
    """train_image_epoch over every other image of the tree in batches of 7, the indices each loss call saw."""
    def run(fixed: bool) -> tuple[list[list[int]], np.ndarray]:
        monkeypatch.setattr(engine, "fixed_shapes", lambda device: fixed)
        seen = []

        class Spy(CE):
            def forward(self, logits, targets, index=None):
                seen.append(index.tolist())
                return super().forward(logits, targets, index)

        source = open_images(str(image_tree / "train"))
        data = LabeledSet(source, np.zeros(len(source), dtype=np.int64), ["a", "b", "c"])
        chosen = np.arange(0, len(source), 2)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
        tf = T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor()])
        engine.train_image_epoch(model, data, chosen, tf, Spy(), torch.optim.SGD(model.parameters(), lr=0.0),
                                 device=torch.device("cpu"), gen=engine.generator(3, 4, 1), epoch=1, batch_size=7,
                                 num_workers=0, progress=False)
        return seen, chosen
    return run


def test_fixed_shape_epochs_train_full_batches_the_ddp_split_agrees(spied_epoch):
    seen, chosen = spied_epoch(True)
    assert len(chosen) % 7 and {len(b) for b in seen} == {7}  # the short last batch was filled up
    assert set(i for b in seen for i in b) == set(chosen.tolist())
    expected = [chosen[b].tolist() for b in engine.epoch_batches(len(chosen), 7, engine.generator(3, 4, 1), False, full=True)]
    assert seen == expected  # data-parallel ranks split the very batches one process trains on
    plain, _ = spied_epoch(False)
    assert len(plain[-1]) == len(chosen) % 7  # the CPU path keeps its short last batch
