"""CLIP models for prompt learning, from Hugging Face transformers or open_clip, behind one interface.

A CLIP is named by one string (``--extra clip=...``):

* a Hugging Face hub id or local directory holding a ``CLIPModel`` and its
  tokenizer (``openai/clip-vit-base-patch16``, ``/models/clip-b16``, ``hf:...``);
* ``open_clip:MODEL:PRETRAINED`` where PRETRAINED is an open_clip tag
  (``open_clip:ViT-B-16:openai``) or a local checkpoint file, or
  ``open_clip:local-dir:/path`` / ``open_clip:hf-hub:org/repo``.

Prompt learning needs more than ``encode_text``: learnable context vectors
replace some token embeddings, so :class:`ClipModel` exposes the token
embedding and the frozen text transformer separately
(:meth:`ClipModel.encode_embedded_text`), and runs the vision transformer
layer by layer so that VPT-deep can insert its tokens
(:meth:`ClipModel.encode_image`). The wrapped model is frozen and always in
eval mode. No weights are ever downloaded when the hub is unreachable: a
missing model fails with one line naming it and how to point at a local copy.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from noisyft.data.transforms import Preprocess
from noisyft.backbones.hf import dir_digest, hub_reachable
from noisyft.errors import UserError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_CLIP = "openai/clip-vit-base-patch16"

# (tokens, layers, call_layer) -> tokens: how the vision transformer's layers are run (VPT-deep inserts tokens)
LayerRunner = Callable[[torch.Tensor, Sequence[nn.Module], Callable[[nn.Module, torch.Tensor], torch.Tensor]], torch.Tensor]


def run_layers(h: torch.Tensor, layers: Sequence[nn.Module], call: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The plain forward: every layer in turn."""
    for layer in layers:
        h = call(layer, h)
    return h


@dataclass(frozen=True)
class ClipSpec:
    """A parsed CLIP name: ``kind`` is ``hf`` or ``open_clip``."""

    kind: str
    model: str
    pretrained: Optional[str] = None


def parse_clip_spec(text: str) -> ClipSpec:
    """``open_clip:MODEL:PRETRAINED`` → open_clip; anything else (``hf:`` optional) → transformers."""
    if text.startswith("open_clip:"):
        parts = text.split(":", 2)
        if len(parts) < 2 or not parts[1]:
            raise UserError(f"CLIP {text!r}: expected open_clip:MODEL:PRETRAINED_TAG_OR_PATH (e.g. open_clip:ViT-B-16:openai)")
        if parts[1] in ("local-dir", "hf-hub"):
            return ClipSpec("open_clip", f"{parts[1]}:{parts[2] if len(parts) > 2 else ''}")
        return ClipSpec("open_clip", parts[1], parts[2] if len(parts) > 2 and parts[2] else None)
    return ClipSpec("hf", text.removeprefix("hf:"))


def is_clip_name(name: str) -> bool:
    """Whether a backbone name denotes a CLIP this module can load (used to default ``--extra clip``)."""
    if name.startswith("open_clip:"):
        return True
    path = name.removeprefix("hf:")
    if os.path.isdir(path):
        try:
            return json.loads(open(os.path.join(path, "config.json")).read()).get("model_type") == "clip"
        except (OSError, ValueError):
            return False
    return "/" in path and "clip" in path.lower()


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive (L, L) mask: position i attends to positions ≤ i (CLIP's text transformer is causal)."""
    return torch.full((length, length), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)


class ClipModel(nn.Module):
    """A frozen CLIP: tokenisation, token embeddings, text transformer, layer-wise vision transformer.

    Subclasses adapt one implementation; everything here is shared. ``weights_id``
    identifies the weights (names a run's detector in logs and caches).
    """

    kind = "base"

    def __init__(self, model: nn.Module, *, name: str, weights_id: str, preprocess: Preprocess):
        super().__init__()
        self.model = model
        self.name = name
        self.weights_id = weights_id
        self.preprocess = preprocess
        model.requires_grad_(False)
        model.eval()

    def train(self, mode: bool = True) -> "ClipModel":
        """The wrapped CLIP stays in eval mode (frozen: no dropout, no BatchNorm statistics updates)."""
        super().train(mode)
        self.model.eval()
        return self

    # --- implementation hooks -------------------------------------------------
    bos_id: int
    eos_id: int
    pad_id: int
    context_length: int

    def words(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens."""
        raise NotImplementedError

    def token_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_embedded_text(self, embeds: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Projected text features of token embeddings ``(N, L, D)`` pooled at positions ``eot``."""
        raise NotImplementedError

    @property
    def vision_tower(self) -> nn.Module:
        raise NotImplementedError

    def vision_layers(self, tower: nn.Module) -> Sequence[nn.Module]:
        raise NotImplementedError

    def vision_tokens(self, tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """Token sequence ``(B, 1 + patches, D)`` entering the first transformer layer."""
        raise NotImplementedError

    def call_layer(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def vision_head(self, tower: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """Projected image features from the last layer's tokens."""
        raise NotImplementedError

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(learnt temperature): cosine similarities are multiplied by this."""
        return self.model.logit_scale.exp().float()

    @property
    def vision_width(self) -> int:
        raise NotImplementedError

    @property
    def patch_size(self) -> int:
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------
    def prompt_ids(self, texts: Sequence[str], n_ctx: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``[start, n_ctx placeholders, words of text, end, pad…]`` per text, and each end-token position.

        The placeholders' embeddings are replaced by learnable context vectors; their
        id does not matter. Rows are padded to the longest prompt only (the text
        transformer is causal, so padding after the end token never changes its output).
        """
        rows = [[self.bos_id] + [self.pad_id] * n_ctx + self.words(t) + [self.eos_id] for t in texts]
        longest = max(len(r) for r in rows)
        if longest > self.context_length:
            bad = texts[max(range(len(rows)), key=lambda i: len(rows[i]))]
            raise UserError(f"prompt for {bad!r} is {longest} tokens with {n_ctx} context tokens; "
                            f"{self.name} takes at most {self.context_length}: shorten the class name or lower n_ctx")
        ids = torch.tensor([r + [self.pad_id] * (longest - len(r)) for r in rows], dtype=torch.long)
        eot = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
        return ids, eot

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Projected (unnormalised) features of plain texts, e.g. zero-shot prompts."""
        device = self.model.logit_scale.device
        ids, eot = self.prompt_ids(texts)
        ids, eot = ids.to(device), eot.to(device)
        return self.encode_embedded_text(self.token_embedding(ids), eot)

    def encode_image(self, pixels: torch.Tensor, tower: Optional[nn.Module] = None,
                     layers: Optional[LayerRunner] = None) -> torch.Tensor:
        """Projected (unnormalised) image features.

        ``tower`` replaces the vision transformer (e.g. a LoRA-adapted copy; the
        projection stays the frozen original's); ``layers`` replaces the loop over
        its transformer layers (VPT-deep inserts its tokens there).
        """
        tower = self.vision_tower if tower is None else tower
        h = self.vision_tokens(tower, pixels)
        h = (layers or run_layers)(h, self.vision_layers(tower), self.call_layer)
        return self.vision_head(tower, h)


class HFClip(ClipModel):
    """A transformers ``CLIPModel`` with its tokenizer."""

    kind = "hf"

    def __init__(self, model: nn.Module, tokenizer, **kw):
        super().__init__(model, **kw)
        self.tokenizer = tokenizer
        self.bos_id = int(tokenizer.bos_token_id)
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        self.context_length = int(model.config.text_config.max_position_embeddings)

    def words(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.text_model.embeddings.token_embedding(ids)

    def encode_embedded_text(self, embeds: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        tm = self.model.text_model
        h = tm.embeddings(inputs_embeds=embeds)  # + position embeddings
        mask = causal_mask(h.shape[1], h.dtype, h.device)[None, None]
        h = tm.encoder(inputs_embeds=h, attention_mask=mask).last_hidden_state
        h = tm.final_layer_norm(h)
        return self.model.text_projection(h[torch.arange(h.shape[0], device=h.device), eot])

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_model

    def vision_layers(self, tower: nn.Module) -> Sequence[nn.Module]:
        return tower.encoder.layers

    def vision_tokens(self, tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        return tower.pre_layrnorm(tower.embeddings(pixels))

    def call_layer(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        out = layer(h, None)
        return out[0] if isinstance(out, tuple) else out

    def vision_head(self, tower: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return self.model.visual_projection(tower.post_layernorm(h[:, 0]))

    @property
    def vision_width(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    @property
    def patch_size(self) -> int:
        return int(self.model.config.vision_config.patch_size)


class OpenClip(ClipModel):
    """An open_clip ``CLIP``/``CustomTextCLIP`` with a ViT image tower and the CLIP BPE tokenizer."""

    kind = "open_clip"

    def __init__(self, model: nn.Module, tokenizer, **kw):
        super().__init__(model, **kw)
        self.tokenizer = tokenizer
        text = self._text
        if not hasattr(tokenizer, "encode") or getattr(text, "text_pool_type", "argmax") != "argmax" \
                or getattr(text, "cls_emb", None) is not None:
            raise UserError(f"open_clip model {self.name}: prompt learning supports CLIP-style text towers "
                            "(BPE tokenizer, end-token pooling) only")
        self.bos_id, self.eos_id, self.pad_id = int(tokenizer.sot_token_id), int(tokenizer.eot_token_id), 0
        self.context_length = int(text.positional_embedding.shape[0])

    @property
    def _text(self) -> nn.Module:
        return getattr(self.model, "text", self.model)

    def words(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def token_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        return self._text.token_embedding(ids)

    def encode_embedded_text(self, embeds: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        t = self._text
        length = embeds.shape[1]
        x = embeds + t.positional_embedding[:length].to(embeds.dtype)
        mask = causal_mask(length, x.dtype, x.device)
        x = t.transformer(x, attn_mask=mask)
        x = t.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        proj = t.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.visual

    def _check_vit(self, tower: nn.Module) -> None:
        if not (hasattr(tower, "_embeds") and hasattr(tower, "transformer") and hasattr(tower, "_pool")):
            raise UserError(f"open_clip model {self.name}: its image tower is not a ViT; VPT-deep needs one "
                            "(use --extra peft=none, or a ViT CLIP)")

    def vision_layers(self, tower: nn.Module) -> Sequence[nn.Module]:
        self._check_vit(tower)
        return tower.transformer.resblocks

    def vision_tokens(self, tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        self._check_vit(tower)
        return tower._embeds(pixels)

    def call_layer(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if not getattr(self.model.visual.transformer, "batch_first", True):
            return layer(h.transpose(0, 1)).transpose(0, 1)
        return layer(h)

    def vision_head(self, tower: nn.Module, h: torch.Tensor) -> torch.Tensor:
        pooled, _ = tower._pool(h)
        return pooled @ tower.proj if tower.proj is not None else pooled

    def encode_image(self, pixels, tower=None, layers=None):
        if tower is None and layers is None:
            return self.model.encode_image(pixels)  # any image tower (ResNet too)
        return super().encode_image(pixels, tower, layers)

    @property
    def vision_width(self) -> int:
        return int(self.model.visual.transformer.width)

    @property
    def patch_size(self) -> int:
        p = self.model.visual.patch_size
        return int(p[0] if isinstance(p, (tuple, list)) else p)


# --- loading -----------------------------------------------------------------


@contextmanager
def _hub_offline_if_unreachable() -> Iterator[bool]:
    """Make huggingface_hub use its cache only when the hub cannot be reached (no minute-long retries)."""
    reachable = hub_reachable()
    if reachable:
        yield True
        return
    import huggingface_hub.constants as hc

    before = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield False
    finally:
        hc.HF_HUB_OFFLINE = before


def _hf_preprocess(path: str, vision_config, local_only: bool) -> Preprocess:
    """The image processor's size/mean/std; CLIP's own statistics when the directory has none."""
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(path, local_files_only=local_only)
        size = proc.size.get("shortest_edge") or proc.size.get("height")
        return Preprocess(int(size), tuple(proc.image_mean), tuple(proc.image_std), "bicubic")
    except Exception:  # no preprocessor_config.json
        return Preprocess(int(vision_config.image_size), OPENAI_MEAN, OPENAI_STD, "bicubic")


def load_hf_clip(id_or_path: str) -> HFClip:
    """``CLIPModel`` + tokenizer (+ image processor) from a hub id or a local directory."""
    from transformers import AutoConfig, AutoTokenizer, CLIPModel

    local = os.path.isdir(id_or_path)
    hint = (f"download it on a connected machine (`huggingface-cli download {id_or_path}`, or "
            f"CLIPModel/CLIPProcessor.from_pretrained(...).save_pretrained(DIR)) and pass --extra clip=DIR")
    with _hub_offline_if_unreachable() as online:
        local_only = local or not online
        try:
            config = AutoConfig.from_pretrained(id_or_path, local_files_only=local_only)
            if config.model_type != "clip":
                raise UserError(f"{id_or_path!r} holds a {config.model_type!r} model, not a CLIP (text + vision) model")
            model = CLIPModel.from_pretrained(id_or_path, local_files_only=local_only)
        except (OSError, ValueError) as e:
            if local:
                raise UserError(f"cannot load a CLIPModel from {id_or_path!r}: {str(e).splitlines()[0]}") from e
            if online:
                raise UserError(f"cannot download CLIP weights {id_or_path!r}: {str(e).splitlines()[0]}") from e
            raise UserError(f"CLIP weights {id_or_path!r} are not in the local Hugging Face cache and the hub is "
                            f"unreachable: {hint}") from e
        try:
            tokenizer = AutoTokenizer.from_pretrained(id_or_path, local_files_only=local_only)
        except (OSError, ValueError, TypeError) as e:
            raise UserError(f"CLIP tokenizer for {id_or_path!r} not found (vocab.json + merges.txt or tokenizer.json): "
                            f"save it next to the weights with CLIPTokenizer.save_pretrained(DIR)") from e
        pre = _hf_preprocess(id_or_path, model.config.vision_config, local_only)
    where = f"{os.path.abspath(id_or_path)}@{dir_digest(id_or_path)}" if local else id_or_path
    return HFClip(model, tokenizer, name=id_or_path, weights_id=f"hf:{where}", preprocess=pre)


def load_open_clip(spec: ClipSpec) -> OpenClip:
    """An open_clip model by name and pretrained tag / checkpoint path, or ``local-dir:``/``hf-hub:``."""
    try:
        import open_clip
    except ImportError as e:
        raise UserError("open_clip models need the package open_clip_torch: pip install open_clip_torch") from e
    label = spec.model + (f":{spec.pretrained}" if spec.pretrained else "")
    p = spec.pretrained
    if p and (os.sep in p or p.endswith((".bin", ".pt", ".pth", ".safetensors"))) and not os.path.isfile(p):
        raise UserError(f"open_clip checkpoint {p!r} not found (pass the path of a local open_clip checkpoint file)")
    if spec.model.startswith("local-dir:") and not os.path.isdir(spec.model[len("local-dir:"):]):
        raise UserError(f"open_clip directory {spec.model[len('local-dir:'):]!r} not found")
    with _hub_offline_if_unreachable() as online:
        try:
            logging.disable(logging.ERROR)  # open_clip logs its download failure itself; ours is the one line shown
            try:
                model = open_clip.create_model(spec.model, pretrained=p)
                tokenizer = open_clip.get_tokenizer(spec.model)
            finally:
                logging.disable(logging.NOTSET)
        except Exception as e:  # download failures come as RuntimeError, OSError, HTTP errors…
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "not found in built-ins" in msg:
                raise UserError(f"unknown open_clip model {spec.model!r} (see open_clip.list_models())") from e
            why = f"could not be loaded ({msg[:160]})" if online else "are not in the local cache and the hub is unreachable"
            raise UserError(f"open_clip weights {label!r} {why}: download them on a connected machine and pass "
                            f"--extra clip=open_clip:{spec.model}:/path/to/open_clip_pytorch_model.bin "
                            f"(or open_clip:local-dir:/path/to/dir)") from e
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    pre = Preprocess(size, tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD)),
                     str(cfg.get("interpolation", "bicubic")))
    return OpenClip(model, tokenizer, name=f"open_clip:{label}", weights_id=f"open_clip:{label}", preprocess=pre)


def load_clip(name: str, device: torch.device | str = "cpu") -> ClipModel:
    """Load a frozen CLIP by name (see the module docstring) onto ``device``."""
    spec = parse_clip_spec(name)
    clip = load_open_clip(spec) if spec.kind == "open_clip" else load_hf_clip(spec.model)
    return clip.to(device)
