"""``load_dataset(name, root, split)``: one entry point for the local datasets.

Expected layouts under ``root`` (nothing is ever downloaded; a missing path raises
``FileNotFoundError`` naming the expected location)::

    cifar10      <root>/cifar-10-batches-py/{data_batch_1..5,test_batch}
    cifar100     <root>/cifar-100-python/{train,test}
    svhn         <root>/{train,test,extra}_32x32.mat
    random300k   <root>/300K_random_images.npy
    imagenet_rc  <root>/**/train_data_batch_{1..10}.npz, val_data.npz  (Downsampled ImageNet 64x64)
    textures     <root>/dtd/images/<class>/*.jpg           (DTD)
    places365    <root>/places365/**/*.jpg
    lsun_crop    <root>/LSUN/**/*.jpg                      (center-cropped, not resized)
    lsun_resize  <root>/LSUN_resize/**/*.jpg
    isun         <root>/iSUN/**/*.jpeg
    folder       <root>/**/*.{jpg,png,...}                 (any folder of images)

For the folder datasets ``root`` may also be the dataset folder itself.
"""
from __future__ import annotations

import os

from .._validation import check_choice
from .arrays import load_random_300k
from .cifar import load_cifar
from .folder import ImageFolderDataset, list_images
from .imagenet_rc import load_imagenet_rc
from .svhn import load_svhn
from .tensor import OOD_LABEL, TensorImageDataset

__all__ = ["load_dataset", "DATASETS"]

# name -> (sub-folder, mode) for folder datasets
_FOLDERS = {
    "textures": (os.path.join("dtd", "images"), "resize_crop"),
    "places365": ("places365", "resize_crop"),
    "lsun_crop": ("LSUN", "center_crop"),
    "lsun_resize": ("LSUN_resize", "resize_crop"),
    "isun": ("iSUN", "resize_crop"),
    "folder": ("", "resize_crop"),
}
#: Names accepted by :func:`load_dataset`.
DATASETS = ("cifar10", "cifar100", "svhn", "random300k", "imagenet_rc") + tuple(_FOLDERS)


def _folder_root(root: str, sub: str, name: str) -> str:
    cands = [os.path.join(root, sub), root] if sub else [root]
    for c in cands:
        if os.path.isdir(c) and list_images(c):
            return c
    raise FileNotFoundError(
        f"{name} not found: expected image files under {cands[0]}. This library never downloads; put the "
        f"extracted {name} images there (any sub-folder structure) or pass that folder as `root`."
    )


def load_dataset(name: str, root: str, split: str = "test", as_ood: bool = False, image_size: int = 32):
    """Load a local dataset by ``name`` (see :data:`DATASETS` and the module docstring).

    Args:
        name: dataset name.
        root: the data folder (see the layouts above).
        split: "train"/"test" (CIFAR), "train"/"test"/"extra" (SVHN), "train"/"test" (ImageNet-RC;
            "test" reads ``val_data.npz``); ignored otherwise.
        as_ood: relabel every image ``-1`` (e.g. SVHN or CIFAR-10 used as a test OOD set).
        image_size: output size for folder datasets (CIFAR/SVHN/300K are 32x32).

    Returns:
        a dataset yielding ``(float (3, H, W) in [0, 1], int label)``; folder datasets,
        ``random300k`` and ``imagenet_rc`` are labelled ``-1``.
    """
    check_choice(name, "name", DATASETS)
    root = os.fspath(root)
    if name in ("cifar10", "cifar100"):
        ds = load_cifar(root, name, split)
    elif name == "svhn":
        ds = load_svhn(root, split)
    elif name == "random300k":
        return load_random_300k(root)
    elif name == "imagenet_rc":  # random 32x32 crops (padding 4), crop positions seeded with 0
        return load_imagenet_rc(root, "train" if split == "train" else "val", seed=0)
    else:
        sub, mode = _FOLDERS[name]
        return ImageFolderDataset(_folder_root(root, sub, name), image_size=image_size, mode=mode, name=name)
    if as_ood:
        ds = TensorImageDataset(ds.images, OOD_LABEL, name=ds.name)
    return ds
