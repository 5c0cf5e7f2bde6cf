import math

import pytest
import torch
import torch.nn.functional as F

from noisyft.losses import ELR, GCE, SCE, create_loss, per_sample_ce
from noisyft.errors import UserError

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
TARGETS = torch.tensor([0, 2])


def _softmax_rows():
    return [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in LOGITS.tolist()]


def test_gce_matches_its_formula():
    p = _softmax_rows()
    q = 0.7
    expected = ((1 - p[0][0] ** q) / q + (1 - p[1][2] ** q) / q) / 2
    assert GCE(q)(LOGITS, TARGETS).item() == pytest.approx(expected, rel=1e-6)


def test_gce_tends_to_ce_as_q_goes_to_zero_and_mae_at_one():
    ce = F.cross_entropy(LOGITS, TARGETS).item()
    assert GCE(1e-4)(LOGITS, TARGETS).item() == pytest.approx(ce, rel=1e-3)
    p = _softmax_rows()
    assert GCE(1.0)(LOGITS, TARGETS).item() == pytest.approx(((1 - p[0][0]) + (1 - p[1][2])) / 2, rel=1e-6)


def test_sce_is_ce_plus_reverse_ce_with_log_clamped_at_1e4():
    p = _softmax_rows()
    rce = [-(sum(pk for k, pk in enumerate(row) if k != t) * math.log(1e-4)) for row, t in zip(p, [0, 2])]
    expected = F.cross_entropy(LOGITS, TARGETS).item() + sum(rce) / 2
    assert SCE(1.0, 1.0)(LOGITS, TARGETS).item() == pytest.approx(expected, rel=1e-5)


def test_elr_updates_running_targets_and_adds_its_penalty():
    elr = ELR(num_examples=4, num_classes=3, beta=0.7, lam=3.0)
    idx = torch.tensor([1, 3])
    loss = elr(LOGITS, TARGETS, idx)
    p = torch.tensor(_softmax_rows()).clamp(1e-4, 1 - 1e-4)
    t = 0.3 * p / p.sum(1, keepdim=True)
    assert torch.allclose(elr.target[idx], t, atol=1e-6)
    assert elr.target[0].abs().sum() == 0
    reg = torch.log(1 - (t * p).sum(1)).mean().item()
    assert loss.item() == pytest.approx(F.cross_entropy(LOGITS, TARGETS).item() + 3.0 * reg, rel=1e-5)


def test_per_sample_ce_is_unreduced():
    out = per_sample_ce(LOGITS, TARGETS)
    assert out.shape == (2,)
    assert out.mean().item() == pytest.approx(F.cross_entropy(LOGITS, TARGETS).item())


def test_unknown_loss_suggests_names():
    with pytest.raises(UserError, match="did you mean gce"):
        create_loss("gcee")
