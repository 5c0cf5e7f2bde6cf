"""VPT-deep (Jia et al. 2022): learnable tokens at the input of every layer of a frozen ViT.

Why: it adapts the image encoder with a few thousand parameters, which DEFT
found the most robust to noisy labels (the pre-trained weights never move).

Layout: before layer 0 the ``n`` tokens of that layer are inserted right after
the class token, ``[CLS, p_1..p_n, patches]``; before every later layer the ``n``
tokens that came out of the previous layer are discarded and replaced by that
layer's own tokens; after the last layer they are removed again, so the pooling
and projection see exactly the original token layout. Works for any ViT whose
layers map ``(B, L, D) → (B, L, D)`` (Hugging Face CLIP, open_clip).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn


class DeepVisualPrompts(nn.Module):
    """``num_layers × n_tokens`` learnable tokens of width ``dim``, with the layer loop that uses them."""

    def __init__(self, num_layers: int, n_tokens: int, dim: int, patch_size: int = 16,
                 generator: torch.Generator | None = None):
        super().__init__()
        if n_tokens < 1:
            raise ValueError(f"VPT needs at least one token per layer, got {n_tokens}")
        bound = math.sqrt(6.0 / float(3 * patch_size * patch_size + dim))  # VPT's Xavier-style initialisation
        init = torch.rand(num_layers, n_tokens, dim, generator=generator) * 2 * bound - bound
        self.tokens = nn.Parameter(init)

    @property
    def n_tokens(self) -> int:
        return self.tokens.shape[1]

    def forward(self, h: torch.Tensor, layers: Sequence[nn.Module],
                call: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Run ``layers`` over tokens ``h`` (B, 1 + P, D) with this module's tokens; returns (B, 1 + P, D)."""
        if len(layers) != self.tokens.shape[0]:
            raise ValueError(f"VPT has tokens for {self.tokens.shape[0]} layers, the encoder has {len(layers)}")
        n, batch = self.n_tokens, h.shape[0]
        for i, layer in enumerate(layers):
            prompts = self.tokens[i].to(h.dtype).expand(batch, -1, -1)
            rest = h[:, 1:] if i == 0 else h[:, 1 + n:]
            h = call(layer, torch.cat([h[:, :1], prompts, rest], dim=1))
        return torch.cat([h[:, :1], h[:, 1 + n:]], dim=1)
