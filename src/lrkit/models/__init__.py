"""Models: a small CNN for 28x28 images (ResNets with torchvision's names come later)."""

from lrkit.models.small import simple_cnn

__all__ = ["simple_cnn"]
