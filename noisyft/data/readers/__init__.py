"""Readers of published datasets in their own layouts, each registered in :data:`noisyft.data.datasets.DATASETS`.

Importing this package registers them all; :mod:`noisyft.data` does so, so every
``--data NAME:PATH`` spec resolves. ``cifarn`` is not a dataset but a ``--labels`` source
(CIFAR-10N/100N human labels for ``cifar10:PATH`` / ``cifar100:PATH``).
"""
from noisyft.data.readers import cifarn  # noqa: F401
from noisyft.data.readers import clothing1m  # noqa: F401
from noisyft.data.readers import tiny_imagenet  # noqa: F401
from noisyft.data.readers import cub200  # noqa: F401
from noisyft.data.readers import stanford_cars  # noqa: F401
from noisyft.data.readers import webvision  # noqa: F401
from noisyft.data.readers import hf  # noqa: F401
from noisyft.data.readers import wds  # noqa: F401
