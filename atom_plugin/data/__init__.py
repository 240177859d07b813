"""Datasets: the embedded default benchmark and loaders for real datasets on local disk.

Every dataset yields ``(image float (C, H, W) in [0, 1], int label)``; OOD and auxiliary
outlier sets use the label ``-1``.  Nothing here downloads anything.
"""
from .arrays import RANDOM_300K_FILE, load_npy_images, load_random_300k
from .cifar import RestrictedUnpickler, load_cifar, load_cifar10, load_cifar100, restricted_pickle_load
from .embedded import AUX_SOURCES, OOD_SET_NAMES, DefaultBenchmark, load_default_benchmark
from .folder import IMAGE_EXTENSIONS, ImageFolderDataset, list_images
from .imagenet_rc import ImageNetRCDataset, load_imagenet_rc, npz_member
from .registry import DATASETS, load_dataset
from .svhn import load_svhn
from .tensor import OOD_LABEL, NumpyImageDataset, TensorImageDataset

__all__ = [
    "DefaultBenchmark", "load_default_benchmark", "AUX_SOURCES", "OOD_SET_NAMES",
    "TensorImageDataset", "NumpyImageDataset", "ImageFolderDataset", "OOD_LABEL",
    "load_dataset", "DATASETS", "load_cifar", "load_cifar10", "load_cifar100", "load_svhn",
    "load_random_300k", "load_npy_images", "RANDOM_300K_FILE", "list_images", "IMAGE_EXTENSIONS",
    "RestrictedUnpickler", "restricted_pickle_load", "ImageNetRCDataset", "load_imagenet_rc", "npz_member",
]
