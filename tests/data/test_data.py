"""Embedded default benchmark and local-file dataset loaders (files written in tmp_path)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from atom_plugin.data import (
    AUX_SOURCES, OOD_SET_NAMES, ImageFolderDataset, NumpyImageDataset, TensorImageDataset, load_cifar10,
    load_cifar100, load_dataset, load_default_benchmark, load_npy_images, load_random_300k, load_svhn,
)
from atom_plugin.data import embedded


# --------------------------------------------------------------------------- embedded benchmark
@pytest.fixture(scope="module")
def bench():
    return load_default_benchmark(seed=0)


def _all_sets(b):
    return {"train": b.train, "test": b.test, "aux": b.aux, **{f"ood/{k}": v for k, v in b.ood.items()}}


def test_benchmark_sizes_labels_and_ranges(bench):
    assert bench.num_classes == 10 and bench.image_size == 32
    assert len(bench.train) + len(bench.test) == 1797
    assert 450 <= len(bench.test) <= 550 and len(bench.aux) == 5000
    assert tuple(bench.ood) == OOD_SET_NAMES and len(OOD_SET_NAMES) == 6
    assert all(len(v) == 250 for v in bench.ood.values())
    # stratified split: every class in both sets, class shares within 2 points of each other
    tr = torch.bincount(bench.train.labels, minlength=10).float()
    te = torch.bincount(bench.test.labels, minlength=10).float()
    assert torch.all(te > 0) and torch.allclose(tr / tr.sum(), te / te.sum(), atol=0.02)
    for name, ds in _all_sets(bench).items():
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (3, 32, 32), name
        x, y = ds[0]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
        if name in ("train", "test"):
            assert 0 <= y < 10
        else:
            assert y == -1 and bool(torch.all(ds.labels == -1))
    # images span the range (not all black / saturated) and sets are not constant
    for name, ds in _all_sets(bench).items():
        xs = ds.get_batch(range(50))
        assert xs.std() > 0.05, name


def test_benchmark_is_deterministic_per_seed(bench):
    again = load_default_benchmark(seed=0)
    for (name, a), b in zip(_all_sets(bench).items(), _all_sets(again).values()):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels), name
    other = load_default_benchmark(seed=1, n_aux=300, n_ood_per_set=40)
    for name, ds in _all_sets(other).items():
        ref = _all_sets(bench)[name]
        n = min(len(ds), len(ref))
        assert not torch.equal(ds.images[:n], ref.images[:n]), f"{name} identical across seeds"
    # a different split, not only different rendering: test images are kept in digits' file
    # order, so a different selection gives a different label sequence
    assert not torch.equal(other.test.labels, bench.test.labels)


def test_changing_aux_size_leaves_test_sets_alone(bench):
    small = load_default_benchmark(seed=0, n_aux=100)
    for k in OOD_SET_NAMES:
        assert torch.equal(small.ood[k].images, bench.ood[k].images), k
    assert torch.equal(small.test.images, bench.test.images)


def test_mean_std_are_train_channel_stats(bench):
    x, _ = bench.train.tensors()
    assert np.allclose(bench.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-5)
    assert np.allclose(bench.std, x.std(dim=(0, 2, 3)).numpy(), atol=1e-4)


def test_test_ood_sources_are_disjoint_from_aux():
    aux = set(AUX_SOURCES)
    assert not aux & set(embedded.TEXTURE_SOURCES) and not aux & set(embedded.PHOTO_SOURCES)
    assert not any("lfw" in s or "motorcycle_right" in s for s in aux)
    # crops of different source images never coincide pixel for pixel
    b = load_default_benchmark(seed=3, n_aux=1000, n_ood_per_set=100)
    aux_rows = {bytes(r) for r in b.aux.images.flatten(1).numpy()}
    for k in ("photos", "textures", "faces"):
        assert not any(bytes(r) in aux_rows for r in b.ood[k].images.flatten(1).numpy()), k


def test_gray_is_not_an_ood_cue(bench):
    """Grayscale sources are tinted like the digits: exact R=G=B images are rare everywhere."""
    def gray_fraction(ds):
        x = ds.images.int()
        return ((x[:, 0] - x[:, 1]).abs().amax(dim=(1, 2)) <= 1).float().mean().item()

    assert gray_fraction(bench.train) < 0.05
    for k in ("textures", "faces", "blobs"):
        assert gray_fraction(bench.ood[k]) < 0.05, k
    assert gray_fraction(bench.aux) < 0.2  # a few crops are saturated white/black regions


def test_noise_sets_follow_their_distributions(bench):
    g = bench.ood["gaussian"].tensors()[0]
    # N(0.5, 1) clipped to [0, 1]: P(x <= 0) = P(x >= 1) = Phi(-0.5) ~ 0.3085
    assert abs((g <= 0.5 / 255).float().mean().item() - 0.3085) < 0.01
    assert abs((g >= 1 - 0.5 / 255).float().mean().item() - 0.3085) < 0.01
    u = bench.ood["uniform"].tensors()[0]
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005


def test_get_batch_and_loader(bench):
    idx = [4999, 3, 17, 3]
    xb = bench.aux.get_batch(idx)
    assert torch.equal(xb, torch.stack([bench.aux[i][0] for i in idx]))
    assert torch.equal(bench.aux.get_batch(torch.tensor(idx)), xb)
    x, y = next(iter(DataLoader(bench.train, batch_size=7)))
    assert x.shape == (7, 3, 32, 32) and y.dtype == torch.int64
    sub = bench.test.subset([0, 1])
    assert len(sub) == 2 and torch.equal(sub.images, bench.test.images[:2])
    with pytest.raises(IndexError):
        bench.aux.get_batch([5000])
    text = bench.describe()
    for k in ("train", "aux", *OOD_SET_NAMES):
        assert k in text
    assert str(len(bench.test)) in text


@pytest.mark.parametrize("kwargs, arg", [({"n_aux": 0}, "n_aux"), ({"seed": -1}, "seed"),
                                         ({"test_fraction": 0.0}, "test_fraction"),
                                         ({"image_size": 8}, "image_size")])
def test_benchmark_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        load_default_benchmark(**kwargs)


def test_other_image_size():
    b = load_default_benchmark(seed=0, image_size=24, n_aux=20, n_ood_per_set=5)
    assert b.train.images.shape[1:] == (3, 24, 24)
    assert all(d.images.shape == (5, 3, 24, 24) for d in b.ood.values())


def test_tensor_dataset_validation():
    with pytest.raises(ValueError, match="uint8"):
        TensorImageDataset(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="labels"):
        TensorImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [0, 1, 2])


# --------------------------------------------------------------------------- CIFAR
def _cifar_arrays(n, seed):
    r = np.random.default_rng(seed)
    return r.integers(0, 256, (n, 3072), dtype=np.uint8), r.integers(0, 10, n).tolist()


def _write_pickle(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def test_cifar10_pickles(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    written = []
    for i in range(1, 6):
        x, y = _cifar_arrays(3, i)
        written.append((x, y))
        # the official batches are Python 2 pickles with byte-string keys
        _write_pickle(d / f"data_batch_{i}", {b"batch_label": b"training batch", b"data": x, b"labels": y})
    xt, yt = _cifar_arrays(4, 99)
    _write_pickle(d / "test_batch", {"data": xt, "labels": yt}, protocol=4)
    train = load_cifar10(tmp_path, "train")
    assert len(train) == 15
    x_all = np.concatenate([w[0] for w in written]).reshape(-1, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(x_all))
    assert train.labels.tolist() == sum((w[1] for w in written), [])
    img, lab = train[4]
    assert torch.allclose(img, torch.from_numpy(x_all[4]).float() / 255) and lab == written[1][1][1]
    test = load_dataset("cifar10", d, split="test")  # root may be the batches folder itself
    assert torch.equal(test.images, torch.from_numpy(xt.reshape(-1, 3, 32, 32))) and test.labels.tolist() == yt
    as_ood = load_dataset("cifar10", tmp_path, split="test", as_ood=True)
    assert as_ood.labels.tolist() == [-1] * 4


def test_cifar100_fine_and_coarse(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    x, _ = _cifar_arrays(5, 0)
    fine, coarse = [0, 99, 42, 7, 13], [0, 19, 3, 4, 5]
    for split in ("train", "test"):
        _write_pickle(d / split, {"data": x, "fine_labels": fine, "coarse_labels": coarse})
    assert load_cifar100(tmp_path, "test").labels.tolist() == fine
    assert load_cifar100(tmp_path, "train", label_type="coarse").labels.tolist() == coarse


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_pickle_cannot_run_code(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    sentinel = tmp_path / "pwned"
    _write_pickle(d / "test_batch", {"data": _Evil(str(sentinel)), "labels": [0]})
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar10(tmp_path, "test")
    assert not sentinel.exists()


def test_cifar_missing_and_malformed(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*never downloads.*cifar\.html"):
        load_cifar10(tmp_path / "nowhere", "train")
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    _write_pickle(d / "test_batch", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        load_cifar10(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_cifar10(tmp_path, "train")  # test_batch present, train batches missing


# --------------------------------------------------------------------------- SVHN
def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    r = np.random.default_rng(0)
    X = r.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    y = np.array([[10], [1], [2], [9], [10], [5]], dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": X, "y": y})
    ds = load_svhn(tmp_path, "test")
    assert ds.labels.tolist() == [0, 1, 2, 9, 0, 5]
    img, lab = ds[3]
    assert torch.allclose(img, torch.from_numpy(X[:, :, :, 3]).permute(2, 0, 1).float() / 255) and lab == 9
    assert load_dataset("svhn", tmp_path, "test", as_ood=True)[0][1] == -1
    with pytest.raises(FileNotFoundError, match=r"train_32x32\.mat.*ufldl"):
        load_svhn(tmp_path, "train")
    savemat(tmp_path / "extra_32x32.mat", {"X": X[:16], "y": y})
    with pytest.raises(ValueError, match=r"\(32, 32, 3, N\)"):
        load_svhn(tmp_path, "extra")


# --------------------------------------------------------------------------- 300K random images
def test_random_300k_is_memory_mapped(tmp_path):
    r = np.random.default_rng(0)
    arr = r.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "300K_random_images.npy", arr)
    ds = load_random_300k(tmp_path)
    assert isinstance(ds, NumpyImageDataset) and isinstance(ds.array, np.memmap) and len(ds) == 7
    idx = [5, 0, 5, 2]
    expect = torch.from_numpy(arr[idx]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(ds.get_batch(idx), expect)
    x, y = ds[5]
    assert torch.equal(x, expect[0]) and y == -1
    assert len(load_dataset("random300k", tmp_path / "300K_random_images.npy")) == 7
    # DataLoader workers started with "spawn" get the dataset pickled: the file is re-opened, not copied
    blob = pickle.dumps(ds)
    assert len(blob) < 1000
    clone = pickle.loads(blob)
    assert isinstance(clone.array, np.memmap) and torch.equal(clone.get_batch(idx), expect)


def test_random_300k_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"300K_random_images\.npy.*outlier-exposure"):
        load_random_300k(tmp_path)
    np.save(tmp_path / "300K_random_images.npy", np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        load_random_300k(tmp_path)
    np.save(tmp_path / "300K_random_images.npy", np.zeros((4, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        load_random_300k(tmp_path)
    np.save(tmp_path / "300K_random_images.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects|allow_pickle"):  # never unpickled
        load_random_300k(tmp_path)


def test_npy_float_channels_first(tmp_path):
    """atom-ood attack writes exact float (N, C, H, W) images; they load back unchanged."""
    arr = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "adv.npy", arr)
    ds = load_npy_images(tmp_path / "adv.npy", label=-1)
    assert ds.image_shape == (3, 32, 32) and isinstance(ds.array, np.memmap)
    assert torch.equal(ds.get_batch([4, 1]), torch.from_numpy(arr[[4, 1]]))
    assert torch.equal(ds[2][0], torch.from_numpy(arr[2])) and ds[2][1] == -1
    bad = arr.copy()
    bad[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_npy_images(tmp_path / "nan.npy")
    np.save(tmp_path / "big.npy", arr * 255)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_npy_images(tmp_path / "big.npy")
    np.save(tmp_path / "f300k.npy", arr)
    with pytest.raises(ValueError, match="uint8"):
        load_random_300k(tmp_path / "f300k.npy")


# --------------------------------------------------------------------------- ImageNet-RC
def _imagenet64(n, seed, side=64):
    return np.random.default_rng(seed).integers(0, 256, (n, 3 * side * side), dtype=np.uint8)


def test_imagenet_rc_memory_mapped_random_crops(tmp_path):
    from atom_plugin.data import load_imagenet_rc

    d = tmp_path / "Imagenet64_train_part1_npz"
    d.mkdir()
    batches = {i: _imagenet64(3 + i, i) for i in (1, 2, 10)}
    for i, data in batches.items():
        np.savez(d / f"train_data_batch_{i}.npz", data=data, labels=np.arange(1, 4 + i))
    ds = load_imagenet_rc(tmp_path, seed=0)
    assert len(ds) == 4 + 5 + 13 and all(isinstance(a, np.memmap) for a in ds.arrays)  # order 1, 2, 10
    full = np.concatenate([batches[1], batches[2], batches[10]]).reshape(-1, 3, 64, 64)
    idx = [21, 0, 5, 5]
    crops = ds.get_batch(idx)
    assert crops.shape == (4, 3, 32, 32)
    for k, i in enumerate(idx):  # every crop is a 32x32 window of the zero-padded 72x72 image
        padded = torch.from_numpy(np.pad(full[i], ((0, 0), (4, 4), (4, 4)))).float() / 255
        windows = padded.unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 41, 41, 32, 32)
        assert (windows == crops[k][:, None, None]).flatten(3).all(-1).all(0).any()
    again = load_imagenet_rc(tmp_path, seed=0)
    assert torch.equal(again.get_batch(idx), crops)  # seeded: reproducible
    blob = pickle.dumps(again)
    assert len(blob) < 3000 and torch.equal(pickle.loads(blob).get_batch(idx), again.get_batch(idx))
    one = load_imagenet_rc(tmp_path, batches=[2], image_size=64, padding=0)
    assert torch.equal(one.get_batch([1]), torch.from_numpy(batches[2][1].reshape(1, 3, 64, 64)).float() / 255)
    assert one[0][1] == -1


def test_imagenet_rc_compressed_val_and_errors(tmp_path):
    from atom_plugin.data import load_imagenet_rc

    with pytest.raises(FileNotFoundError, match=r"train_data_batch_1\.npz.*never downloads"):
        load_imagenet_rc(tmp_path)
    val = _imagenet64(4, 0, side=32)
    np.savez_compressed(tmp_path / "val_data.npz", data=val, labels=np.ones(4))
    ds = load_dataset("imagenet_rc", tmp_path, split="test")  # "test" reads val_data.npz
    assert len(ds) == 4 and ds.side == 32 and ds.get_batch([0]).shape == (1, 3, 32, 32)
    np.savez(tmp_path / "train_data_batch_1.npz", data=np.zeros((2, 100), np.uint8))
    with pytest.raises(ValueError, match=r"3\*S\*S"):
        load_imagenet_rc(tmp_path)
    with pytest.raises(FileNotFoundError, match="train_data_batch_3"):
        load_imagenet_rc(tmp_path, batches=[3])
    np.savez(tmp_path / "obj.npz", data=np.array([{"a": 1}], dtype=object))
    from atom_plugin.data import npz_member
    with pytest.raises(ValueError, match="objects"):
        npz_member(str(tmp_path / "obj.npz"), "data")


# --------------------------------------------------------------------------- image folders
def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_recursive_resize_and_crop(tmp_path):
    r = np.random.default_rng(0)
    root = tmp_path / "dtd" / "images"
    small = r.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    _png(root / "banded" / "b.png", small)
    _png(root / "banded" / "a.png", r.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    _png(root / "zigzag" / "c.png", r.integers(0, 256, (64, 48), dtype=np.uint8))  # grayscale
    (root / "zigzag" / "notes.txt").write_text("not an image")
    ds = load_dataset("textures", tmp_path)
    assert [os.path.relpath(p, root) for p in ds.paths] == ["banded/a.png", "banded/b.png", "zigzag/c.png"]
    batch = ds.get_batch([0, 1, 2])
    assert batch.shape == (3, 3, 32, 32) and ds[2][1] == -1
    assert torch.equal(batch[1], torch.from_numpy(small).permute(2, 0, 1).float() / 255)  # 32x32: untouched
    g = batch[2]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])  # gray -> 3 equal channels
    # resize_crop of a 40x60 image: shorter side -> 32, then the central 32 columns
    with Image.open(root / "banded" / "a.png") as im:
        ref = np.asarray(im.resize((48, 32), Image.Resampling.BILINEAR))[:, 8:40]
    assert torch.equal(batch[0], torch.from_numpy(ref.copy()).permute(2, 0, 1).float() / 255)


def test_image_folder_center_crop_lsun(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (36, 36, 3), dtype=np.uint8)
    _png(tmp_path / "LSUN" / "test" / "0.jpg".replace(".jpg", ".png"), arr)
    ds = load_dataset("lsun_crop", tmp_path)
    assert torch.equal(ds[0][0], torch.from_numpy(arr[2:34, 2:34].copy()).permute(2, 0, 1).float() / 255)
    _png(tmp_path / "tiny" / "t.png", arr[:20, :20])
    with pytest.raises(ValueError, match="smaller than image_size"):
        ImageFolderDataset(tmp_path / "tiny", mode="center_crop")[0]


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="iSUN"):
        load_dataset("isun", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="name"):
        load_dataset("imagenet", tmp_path)
