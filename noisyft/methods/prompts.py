"""Dual learnable text prompts (DEFT's detector): one positive and one negative prompt per class.

Each prompt is ``[start] ctx_1 … ctx_n <class-name text> [end]`` where the
``n`` context vectors are learnable and shared by all classes (CoOp-style,
initialised N(0, 0.02)); the positive and the negative prompts have separate
contexts. Why two: the positive prompt learns what the class looks like, the
negative one learns a per-class threshold — an image is judged clean for its
label when it is closer to the label's positive than to its negative prompt.
The class-name text comes from ``suffix`` (``"{}."`` by default: the class
name and a full stop, as in the paper). Prompts are encoded by the frozen CLIP
text transformer; only the two contexts are trained.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from noisyft.clip_models import ClipModel


class DualPromptLearner(nn.Module):
    """Positive and negative context vectors plus the fixed token embeddings around them."""

    def __init__(self, clip: ClipModel, class_names: Sequence[str], *, n_ctx: int = 16, suffix: str = "{}.",
                 init_std: float = 0.02, generator: torch.Generator | None = None):
        super().__init__()
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be at least 1, got {n_ctx}")
        ids, eot = clip.prompt_ids([suffix.format(name) for name in class_names], n_ctx=n_ctx)
        device = clip.model.logit_scale.device
        with torch.no_grad():
            embeds = clip.token_embedding(ids.to(device)).float()
        width = embeds.shape[-1]
        self.n_ctx = n_ctx
        self.register_buffer("head", embeds[:, :1].clone(), persistent=False)         # start token
        self.register_buffer("tail", embeds[:, 1 + n_ctx:].clone(), persistent=False)  # class name, end, padding
        self.register_buffer("eot", eot.to(device), persistent=False)
        self.pos_ctx = nn.Parameter(torch.randn(n_ctx, width, generator=generator).to(device) * init_std)
        self.neg_ctx = nn.Parameter(torch.randn(n_ctx, width, generator=generator).to(device) * init_std)

    @property
    def num_classes(self) -> int:
        return self.head.shape[0]

    def embeddings(self, ctx: torch.Tensor) -> torch.Tensor:
        """Token embeddings (C, L, D) of every class's prompt with context ``ctx`` (n_ctx, D)."""
        c = self.num_classes
        return torch.cat([self.head, ctx.unsqueeze(0).expand(c, -1, -1).to(self.head.dtype), self.tail], dim=1)

    def encode(self, clip: ClipModel, ctx: torch.Tensor) -> torch.Tensor:
        """L2-normalised text features (C, P) of the prompts with context ``ctx``."""
        return F.normalize(clip.encode_embedded_text(self.embeddings(ctx), self.eot).float(), dim=-1)

    def forward(self, clip: ClipModel) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) normalised text features, each (C, P)."""
        return self.encode(clip, self.pos_ctx), self.encode(clip, self.neg_ctx)
