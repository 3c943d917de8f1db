"""Data sets: 2-D toys with exact densities, scikit-learn digits, MNIST (IDX), CIFAR-10,
out-of-distribution sets for MNIST, and batching and augmentation.

Everything returns ``torch`` tensors. Images are float32 ``(N, C, H, W)`` scaled to
``[-1, 1]``; labels are int64 ``(N,)``. Nothing here downloads.

Example:
    >>> from ebmcmc.datasets import toy_dataset, load_digits
    >>> toy_dataset("eight_gaussians", 4, generator=0).shape
    torch.Size([4, 2])
    >>> load_digits("test")[0].shape
    torch.Size([359, 1, 8, 8])
"""

from .batching import batches, random_hflip
from .cifar import CIFAR10_CLASSES, RestrictedUnpickler, load_cifar10
from .images import MNIST_FILES, load_digits, load_mnist, read_idx
from .ood import OOD_SETS, load_mnist_ood_sets, mnist_ood_sets, resize_images
from .toy import (
    TOY_DATASETS,
    TOY_TARGETS,
    checkerboard,
    eight_gaussians,
    eight_gaussians_target,
    grid25,
    grid25_target,
    rings,
    rings_target,
    swiss_roll,
    toy_dataset,
    toy_target,
)

__all__ = [
    "TOY_DATASETS",
    "toy_dataset",
    "eight_gaussians",
    "grid25",
    "rings",
    "checkerboard",
    "swiss_roll",
    "TOY_TARGETS",
    "toy_target",
    "eight_gaussians_target",
    "grid25_target",
    "rings_target",
    "load_digits",
    "read_idx",
    "load_mnist",
    "MNIST_FILES",
    "load_cifar10",
    "CIFAR10_CLASSES",
    "RestrictedUnpickler",
    "batches",
    "random_hflip",
    "OOD_SETS",
    "mnist_ood_sets",
    "load_mnist_ood_sets",
    "resize_images",
]
