"""LabelMatch: semi-supervised object detection on PyTorch Lightning, torchvision and Hydra."""

__version__ = "0.1.0"
