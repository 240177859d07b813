"""Unreadable dataset files raise ValueError naming the file (never a raw traceback, never a pickle run)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from atom_plugin.data.arrays import load_npy_images
from atom_plugin.data.cifar import DatasetPickleError, load_cifar10
from atom_plugin.data.folder import ImageFolderDataset
from atom_plugin.data.imagenet_rc import npz_member


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(root / "a_good.png")
    raw = (root / "a_good.png").read_bytes()
    (root / "b_truncated.png").write_bytes(raw[: len(raw) // 2])
    (root / "c_not_an_image.png").write_bytes(b"hello, not a PNG")
    broken = bytearray(raw)
    broken[1:4] = b"XXX"  # destroyed signature
    (root / "d_bad_signature.png").write_bytes(bytes(broken))
    return root


def test_corrupt_images_name_the_file(image_folder):
    ds = ImageFolderDataset(image_folder)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == -1
    for i in range(1, len(ds)):
        with pytest.raises(ValueError, match="cannot be read as an image") as err:
            ds[i]
        assert ds.paths[i] in str(err.value) and "remove or replace the file" in str(err.value)
    with pytest.raises(ValueError, match="b_truncated.png"):
        ds.get_batch([0, 1])


def test_corrupt_image_through_a_dataloader_worker_is_a_value_error(image_folder):
    from torch.utils.data import DataLoader

    ds = ImageFolderDataset(image_folder)
    with pytest.raises(ValueError, match="b_truncated.png"):
        for _ in DataLoader(ds, batch_size=2, num_workers=1):
            pass


def test_object_npy_is_named_and_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    path = tmp_path / "objects.npy"
    np.save(path, np.array([Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects\.npy holds an object-dtype array"):
        load_npy_images(str(path))
    assert not (tmp_path / "pwned").exists()
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"\x93NUMPY\x09\x09garbage")
    with pytest.raises(ValueError, match=r"junk\.npy is not a readable \.npy array"):
        load_npy_images(str(junk))
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npy"):
        load_npy_images(str(empty))


def test_npz_errors_name_the_file(tmp_path):
    path = tmp_path / "train_data_batch_1.npz"
    np.savez_compressed(path, data=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"train_data_batch_1\.npz: array 'data' cannot be read"):
        npz_member(str(path), "data")
    path.write_bytes(b"PK broken")
    with pytest.raises(ValueError, match=r"train_data_batch_1\.npz is not a readable \.npz"):
        npz_member(str(path), "data")


@pytest.mark.parametrize("content", [b"", b"\x80\x04\x95garbage", b"not a pickle at all"])
def test_truncated_cifar_batches_name_the_file(tmp_path, content):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(content)
    with pytest.raises(DatasetPickleError, match="test_batch") as err:
        load_cifar10(tmp_path, "test")
    assert isinstance(err.value, ValueError) and isinstance(err.value, pickle.UnpicklingError)


def test_truncated_svhn_mat_names_the_file(tmp_path):
    from atom_plugin.data.svhn import load_svhn

    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(ValueError, match=r"test_32x32\.mat is not a readable SVHN \.mat file"):
        load_svhn(str(tmp_path), "test")
