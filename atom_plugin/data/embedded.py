"""The embedded default benchmark: a small, real, offline OOD benchmark at 32x32 RGB.

Built only from images that installed dependencies ship, so it needs no download:

* **in-distribution** (labels 0..9): scikit-learn's ``load_digits`` (1797 handwritten
  8x8 digits), padded by one pixel and upsampled bilinearly to 32x32: a bright digit on a
  dark background with a random brightness, contrast and mild colour tint per image,
  plus light pixel noise.  Split stratified into ``train``/``test`` by ``seed``.
* **auxiliary outliers** ``aux`` (label -1): random 32x32 crops of 18 photos shipped in
  ``skimage/data`` (astronaut, camera, chelsea, coffee, horse, rocket, motorcycle_left,
  page, coins, moon, hubble_deep_field, ihc, retina, cell, text, clock_motion, color,
  logo), each read at several downscales (short side 40, 64, 128 and 256 px) so crops
  range from whole scenes to close-up texture.
* **test OOD sets** (label -1), disjoint from every auxiliary source image:
  ``photos`` (crops of scikit-learn's ``china.jpg``/``flower.jpg``), ``textures``
  (scikit-image's brick/grass/gravel), ``faces`` (the 100 LFW faces of
  ``skimage.data.lfw_subset``, random crop/flip), ``blobs`` (synthetic bright blobs on a
  dark background, rendered exactly like the digits: the hardest, "near" OOD set),
  ``gaussian`` (i.i.d. N(0.5, 1) per pixel and channel, clipped to [0, 1], as ATOM
  Appendix B.1) and ``uniform`` (i.i.d. U[0, 1]).

Fairness: every grayscale source (digits, the grayscale photos, textures, faces, blobs)
gets the same random mild colour tint, so "is the image exactly gray?" separates nothing,
and the digits carry the same light noise as the blobs, so smoothness alone does not
separate the near-OOD set.  Colour photos stay as they are (on both the auxiliary and the
test side).

Determinism: each component draws from its own generator seeded by ``(seed, component)``,
so the same ``seed`` gives identical tensors, a different ``seed`` gives different
crops/splits/noise, and changing e.g. ``n_aux`` does not change the test OOD sets.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_float, check_int
from .tensor import OOD_LABEL, TensorImageDataset

__all__ = ["DefaultBenchmark", "load_default_benchmark", "AUX_SOURCES", "OOD_SET_NAMES"]

#: skimage/data photos used for auxiliary outliers (never for test OOD sets).
AUX_SOURCES = (
    "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "horse.png", "rocket.jpg",
    "motorcycle_left.png", "page.png", "coins.png", "moon.png", "hubble_deep_field.jpg", "ihc.png",
    "retina.jpg", "cell.png", "text.png", "clock_motion.png", "color.png", "logo.png",
)
#: skimage/data textures used for the ``textures`` test OOD set.
TEXTURE_SOURCES = ("brick.png", "grass.png", "gravel.png")
#: scikit-learn sample photos used for the ``photos`` test OOD set.
PHOTO_SOURCES = ("china.jpg", "flower.jpg")
#: Names of the test OOD sets, in order.
OOD_SET_NAMES = ("photos", "textures", "faces", "blobs", "gaussian", "uniform")
_LEVELS = (40, 64, 128, 256)  # short side (px) of the downscaled copies crops are taken from
_COMPONENT = {"split": 1, "id": 2, "aux": 3, "photos": 4, "textures": 5, "faces": 6, "blobs": 7,
              "gaussian": 8, "uniform": 9}
_TINT = 0.35   # colour tint strength: channel gains in [1 - _TINT, 1], max gain 1
_NOISE = 0.02  # std of the pixel noise on digits and blobs


@dataclass
class DefaultBenchmark:
    """The embedded benchmark returned by :func:`load_default_benchmark`.

    Attributes:
        train, test: in-distribution datasets, labels ``0..num_classes-1``.
        aux: auxiliary outliers for OE/ATOM training (label -1); ``aux.get_batch(idx)``
            returns float candidates ``(B, 3, H, W)`` for outlier mining.
        ood: test OOD sets, name -> dataset (label -1), see :data:`OOD_SET_NAMES`.
        num_classes: 10.
        image_size: side length of every image.
        mean, std: per-channel mean/std of ``train`` (for :class:`~atom_plugin.models.Normalize`).
        seed: the seed it was built from.
        sources: set name -> short description of where its images come from.
    """

    train: TensorImageDataset
    test: TensorImageDataset
    aux: TensorImageDataset
    ood: dict
    num_classes: int = 10
    image_size: int = 32
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.25, 0.25, 0.25)
    seed: int = 0
    sources: dict = field(default_factory=dict)

    def describe(self) -> str:
        """A short text table of the sets, their roles and sizes."""
        rows = [("train", "ID train", len(self.train)), ("test", "ID test", len(self.test)),
                ("aux", "aux outliers", len(self.aux))]
        rows += [(f"ood/{k}", "test OOD", len(v)) for k, v in self.ood.items()]
        s = self.image_size
        lines = [f"default benchmark (seed={self.seed}, {self.num_classes} classes, images 3x{s}x{s} in [0, 1])",
                 f"{'set':<14}{'role':<14}{'images':>7}  source"]
        for name, role, n in rows:
            key = name.split("/")[-1]
            lines.append(f"{name:<14}{role:<14}{n:>7}  {self.sources.get(key, '')}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- sources
def _package_dir(package: str) -> str:
    """Directory of an installed package, found without importing it (sklearn imports slowly)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"The embedded benchmark needs `{package}`; install it with pip.")
    return list(spec.submodule_search_locations)[0]


def _skimage_path(fname: str) -> str:
    path = os.path.join(_package_dir("skimage"), "data", fname)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"scikit-image data file {path} is missing; the embedded benchmark needs the images that the "
            f"scikit-image wheel ships (reinstall scikit-image>=0.21)."
        )
    return path


def _sklearn_path(fname: str) -> str:
    path = os.path.join(_package_dir("sklearn"), "datasets", "images", fname)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"scikit-learn sample image {path} is missing; reinstall scikit-learn.")
    return path


@functools.lru_cache(maxsize=None)
def _pyramid(path: str) -> tuple:
    """(is_gray, [uint8 arrays (H, W) or (H, W, 3) at each level]) for one image file."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
        im = im.convert("L" if gray else "RGB")
    w, h = im.size
    levels = []
    for short in _LEVELS:
        if short >= min(w, h):
            break
        scale = short / min(w, h)
        size = (max(32, round(w * scale)), max(32, round(h * scale)))
        levels.append(np.asarray(im.resize(size, Image.Resampling.BILINEAR)))
    levels.append(np.asarray(im))
    for a in levels:
        a.setflags(write=False)
    return gray, tuple(levels)


def _random_crops(rng: np.random.Generator, paths, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random ``size`` x ``size`` crops (float (n, 3, s, s) in [0, 1]) and an is-gray mask."""
    out = np.empty((n, 3, size, size), dtype=np.float32)
    gray_mask = np.zeros(n, dtype=bool)
    src = rng.integers(0, len(paths), size=n)
    lvl_u = rng.random(n)
    for s_idx, path in enumerate(paths):
        gray, levels = _pyramid(path)
        where = np.flatnonzero(src == s_idx)
        lvl = np.minimum((lvl_u[where] * len(levels)).astype(int), len(levels) - 1)
        for l_idx, img in enumerate(levels):
            sel = where[lvl == l_idx]
            if sel.size == 0:
                continue
            h, w = img.shape[:2]
            ys = rng.integers(0, h - size + 1, size=sel.size)
            xs = rng.integers(0, w - size + 1, size=sel.size)
            oy = ys[:, None, None] + np.arange(size)[None, :, None]
            ox = xs[:, None, None] + np.arange(size)[None, None, :]
            crops = img[oy, ox]  # (k, s, s) or (k, s, s, 3)
            if gray:
                crops = np.repeat(crops[:, None], 3, axis=1)
            else:
                crops = crops.transpose(0, 3, 1, 2)
            out[sel] = crops.astype(np.float32) / 255.0
            gray_mask[sel] = gray
    return out, gray_mask


def _tint(rng: np.random.Generator, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Multiply each (selected) image's channels by random gains: one channel 1, the others in [1 - _TINT, 0.95]."""
    n = x.shape[0]
    gains = rng.uniform(1.0 - _TINT, 0.95, size=(n, 3)).astype(np.float32)
    gains[np.arange(n), rng.integers(0, 3, size=n)] = 1.0  # one channel keeps full gain: spread >= 0.05
    if mask is not None:
        gains[~mask] = 1.0
    return x * gains[:, :, None, None]


def _to_uint8(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8))


def _render_strokes(rng: np.random.Generator, g: np.ndarray) -> np.ndarray:
    """Gray shapes ``g`` (N, 32, 32) in [0, 1] -> RGB bright-on-dark with jitter, tint, noise."""
    n = g.shape[0]
    bg = rng.uniform(0.0, 0.2, size=(n, 1, 1)).astype(np.float32)
    fg = rng.uniform(0.7, 1.0, size=(n, 1, 1)).astype(np.float32)
    x = bg + (fg - bg) * g
    x = _tint(rng, np.repeat(x[:, None], 3, axis=1))
    x = x + _NOISE * rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x, 0.0, 1.0)


def _upsample(g: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(g, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].clamp_(0, 1).numpy()


# --------------------------------------------------------------------------- the sets
def _digits(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    path = os.path.join(_package_dir("sklearn"), "datasets", "data", "digits.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"scikit-learn's digits file {path} is missing; reinstall scikit-learn.")
    data = np.loadtxt(path, delimiter=",", dtype=np.float32)  # what sklearn.datasets.load_digits reads
    X, y = data[:, :-1], data[:, -1].astype(np.int64)
    g = np.pad(X.reshape(-1, 8, 8) / 16.0, ((0, 0), (1, 1), (1, 1)))  # 1 px margin like MNIST
    return _render_strokes(rng, _upsample(g, size)), y.astype(np.int64)


def _blobs(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field_ = gaussian_filter(rng.standard_normal((n, 12, 12)).astype(np.float32), sigma=(0, 1.5, 1.5))
    q = rng.uniform(0.6, 0.8, size=(n, 1, 1))  # 20-40 % of the area is "ink"
    flat = np.sort(field_.reshape(n, -1), axis=1)
    thr = flat[np.arange(n), (q.ravel() * flat.shape[1]).astype(int)][:, None, None]
    g = np.clip((field_ - thr) / (field_.std(axis=(1, 2), keepdims=True) * 0.5 + 1e-6), 0, 1)
    g[:, 0, :] = g[:, -1, :] = 0
    g[:, :, 0] = g[:, :, -1] = 0
    return _render_strokes(rng, _upsample(g, size))


def _faces(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    faces = np.load(_skimage_path("lfw_subset.npy"), allow_pickle=False)[:100].astype(np.float32)
    if faces.max() > 1.0:
        faces /= 255.0
    idx = rng.integers(0, faces.shape[0], size=n)
    box = rng.integers(20, 26, size=n)
    out = np.empty((n, size, size), dtype=np.float32)
    for k in range(n):  # n is small (hundreds)
        b = box[k]
        y0, x0 = rng.integers(0, 26 - b, size=2)
        crop = faces[idx[k], y0:y0 + b, x0:x0 + b]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[k] = _upsample(crop[None], size)[0]
    return _tint(rng, np.repeat(out[:, None], 3, axis=1))


def load_default_benchmark(seed: int = 0, image_size: int = 32, n_aux: int = 5000, n_ood_per_set: int = 250,
                           test_fraction: float = 0.28) -> DefaultBenchmark:
    """Build the embedded benchmark (offline, about a second on one CPU core).

    Args:
        seed: controls the train/test split, the auxiliary crops, the OOD crops and noise.
        image_size: side of the square RGB images (default 32; at least 16).
        n_aux: number of auxiliary outlier crops.
        n_ood_per_set: images per test OOD set.
        test_fraction: share of the 1797 digits held out as ID test set (stratified).

    Returns:
        a :class:`DefaultBenchmark`; every dataset yields ``(float (3, S, S) in [0, 1], int)``.
    """
    check_int(seed, "seed", low=0)
    check_int(image_size, "image_size", low=16, high=128)
    check_int(n_aux, "n_aux", low=1)
    check_int(n_ood_per_set, "n_ood_per_set", low=1)
    check_float(test_fraction, "test_fraction", low=0.0, high=0.9, low_open=True)

    def rng(component: str) -> np.random.Generator:
        return np.random.default_rng([seed, _COMPONENT[component]])

    # In-distribution digits and a stratified split.
    x_id, y_id = _digits(rng("id"), image_size)
    r = rng("split")
    test_idx = []
    for c in range(10):
        members = np.flatnonzero(y_id == c)
        test_idx.append(r.permutation(members)[: int(round(test_fraction * members.size))])
    test_idx = np.sort(np.concatenate(test_idx))
    train_idx = np.setdiff1d(np.arange(y_id.size), test_idx)
    train_idx = r.permutation(train_idx)
    id_u8 = _to_uint8(x_id)
    labels = torch.from_numpy(y_id)
    train = TensorImageDataset(id_u8[train_idx], labels[train_idx], name="digits-train")
    test = TensorImageDataset(id_u8[test_idx], labels[test_idx], name="digits-test")

    # Auxiliary outliers: crops of skimage photos.
    r = rng("aux")
    aux_x, aux_gray = _random_crops(r, tuple(_skimage_path(f) for f in AUX_SOURCES), n_aux, image_size)
    aux = TensorImageDataset(_to_uint8(_tint(r, aux_x, aux_gray)), OOD_LABEL, name="aux")

    # Test OOD sets.
    n = n_ood_per_set
    ood = {}
    r = rng("photos")
    ood["photos"] = _random_crops(r, tuple(_sklearn_path(f) for f in PHOTO_SOURCES), n, image_size)[0]
    r = rng("textures")
    tex, tex_gray = _random_crops(r, tuple(_skimage_path(f) for f in TEXTURE_SOURCES), n, image_size)
    ood["textures"] = _tint(r, tex, tex_gray)
    ood["faces"] = _faces(rng("faces"), n, image_size)
    ood["blobs"] = _blobs(rng("blobs"), n, image_size)
    shape = (n, 3, image_size, image_size)
    ood["gaussian"] = np.clip(rng("gaussian").normal(0.5, 1.0, size=shape), 0.0, 1.0)
    ood["uniform"] = rng("uniform").random(shape)
    ood = {k: TensorImageDataset(_to_uint8(v), OOD_LABEL, name=k) for k, v in ood.items()}

    xf = train.images.float().div_(255.0)
    mean = tuple(float(v) for v in xf.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in xf.std(dim=(0, 2, 3)))
    sources = {
        "train": "sklearn load_digits, bright digit on dark background, tinted",
        "test": "sklearn load_digits (held out, stratified)",
        "aux": f"crops of {len(AUX_SOURCES)} skimage.data photos",
        "photos": "crops of sklearn china.jpg / flower.jpg",
        "textures": "crops of skimage brick / grass / gravel",
        "faces": "skimage lfw_subset faces (100), crop + flip",
        "blobs": "synthetic blobs rendered like the digits",
        "gaussian": "N(0.5, 1) per pixel, clipped",
        "uniform": "U[0, 1] per pixel",
    }
    return DefaultBenchmark(train=train, test=test, aux=aux, ood=ood, num_classes=10, image_size=image_size,
                            mean=mean, std=std, seed=seed, sources=sources)
