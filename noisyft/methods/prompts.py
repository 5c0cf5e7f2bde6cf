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

import copy
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from noisyft.backbones.clip import ClipModel
from noisyft.engine import generator
from noisyft.errors import UserError
from noisyft.methods.vpt import DeepVisualPrompts


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


def lora_tower(clip: ClipModel, rank: int, alpha: float) -> nn.Module:
    """A copy of CLIP's vision transformer with LoRA on the attention q and v projections (base frozen)."""
    if clip.kind != "hf":
        raise UserError(f"{clip.name}: LoRA on q/v needs a Hugging Face CLIP (open_clip packs q, k and v into one "
                        "projection); use --extra peft=vpt")
    from peft import LoraConfig, inject_adapter_in_model

    tower = copy.deepcopy(clip.vision_tower)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    return inject_adapter_in_model(config, tower)


class DualPromptDetector(nn.Module):
    """Frozen CLIP + dual prompts + a parameter-efficient image-encoder adapter (VPT-deep or LoRA)."""

    def __init__(self, clip: ClipModel, names: Sequence[str], *, n_ctx: int = 16, prompt: str = "{}.",
                 peft: str = "vpt", vpt_tokens: int = 20, lora_rank: int = 8, lora_alpha: float = 16.0,
                 seed: int = 0):
        super().__init__()
        if peft not in ("vpt", "lora", "none"):
            raise UserError(f"unknown image-encoder adapter {peft!r} (vpt, lora or none)")
        gen = generator(seed, 10)
        torch.manual_seed(gen.initial_seed())  # LoRA's own initialisation draws from the global generator
        self.clip = clip
        self.prompts = DualPromptLearner(clip, names, n_ctx=n_ctx, suffix=prompt, generator=gen)
        self.vpt = None
        self.tower = None
        if peft == "vpt":
            layers = len(clip.vision_layers(clip.vision_tower))
            self.vpt = DeepVisualPrompts(layers, vpt_tokens, clip.vision_width, clip.patch_size, generator=gen)
        elif peft == "lora":
            self.tower = lora_tower(clip, lora_rank, lora_alpha)
        self.to(clip.logit_scale.device)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised, adapted image embeddings (B, P)."""
        return F.normalize(self.clip.encode_image(x, tower=self.tower, layers=self.vpt).float(), dim=-1)

    def text_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) normalised prompt embeddings, each (C, P)."""
        return self.prompts(self.clip)

    def pair_logits(self, x: torch.Tensor, text: Optional[tuple[torch.Tensor, torch.Tensor]] = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) logits (B, C); the negative side sees the image embedding detached."""
        pos_text, neg_text = self.text_features() if text is None else text
        img = self.image_features(x)
        scale = self.clip.logit_scale
        return scale * img @ pos_text.T, scale * img.detach() @ neg_text.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Positive logits: the detector used as a classifier."""
        return self.pair_logits(x)[0]
