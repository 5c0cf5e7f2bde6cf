"""noisyft: fine-tune pre-trained vision models on noisily labelled images and
report which labels are wrong."""

__version__ = "0.1.0"
