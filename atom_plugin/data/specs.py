"""Dataset specs as the command line writes them: ``[LABEL=]KIND:PATH`` or ``default[:NAME]``.

``KIND`` is a name of :data:`atom_plugin.data.DATASETS` (cifar10, svhn, textures, folder,
...) or ``npy`` (a ``.npy`` image array); ``default`` is the embedded benchmark.
"""
from __future__ import annotations

from typing import Any

__all__ = ["parse_dataset_spec", "load_dataset_spec", "load_ood_sets", "load_id_data", "ID_KINDS"]

#: dataset kinds that can be the in-distribution data (they have class labels and a train split)
ID_KINDS = ("cifar10", "cifar100", "svhn")


def parse_dataset_spec(spec: str, option: str = "dataset") -> tuple[str, str, str]:
    """``[LABEL=]KIND:PATH`` -> ``(label, kind, path)``; ``default[:NAME]`` -> ``(label, "default", NAME)``."""
    from .registry import DATASETS

    label = None
    if "=" in spec.split(":", 1)[0]:
        label, spec = spec.split("=", 1)
    if spec == "default" or spec.startswith("default:"):
        _, _, path = spec.partition(":")
        return label or (path or "default"), "default", path
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise ValueError(
            f"{option} {spec!r}: expected KIND:PATH (e.g. svhn:/data, textures:/data/dtd, npy:/data/x.npy, "
            "folder:/images) or 'default'."
        )
    if kind not in DATASETS + ("npy",):
        raise ValueError(f"{option} {spec!r}: unknown dataset kind {kind!r}; use one of {sorted(DATASETS + ('npy',))}.")
    return label or kind, kind, path


def load_dataset_spec(kind: str, path: str, split: str = "test", as_ood: bool = True, option: str = "dataset"):
    """The dataset of a parsed spec (local files only)."""
    from .arrays import load_npy_images
    from .registry import load_dataset

    if kind == "npy":
        return load_npy_images(path, label=-1 if as_ood else 0)
    try:
        return load_dataset(kind, path, split=split, as_ood=as_ood)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{option} {kind}:{path}: {err}") from None


def load_ood_sets(specs: list[str], bench: Any = None, option: str = "--ood") -> dict[str, Any]:
    """Specs -> ``{name: dataset}``; ``default`` expands to the embedded benchmark's OOD sets."""
    out: dict[str, Any] = {}
    for spec in specs:
        label, kind, path = parse_dataset_spec(spec, option)
        if kind == "default":
            if bench is None:
                from .embedded import load_default_benchmark

                bench = load_default_benchmark(n_aux=1)  # the auxiliary set is not used here
            if path and path not in bench.ood:
                raise ValueError(f"{option} {spec!r}: the default benchmark has sets {list(bench.ood)}, not {path!r}.")
            out.update({path: bench.ood[path]} if path else bench.ood)
            continue
        if label in out:
            raise ValueError(f"{option}: the set name {label!r} is used twice; name them LABEL=KIND:PATH.")
        out[label] = load_dataset_spec(kind, path, "test", True, option)
    return out


def load_id_data(spec: str, seed: int = 0, option: str = "--data"):
    """An ID spec -> ``(test_set, train_set, benchmark or None)``."""
    _, kind, path = parse_dataset_spec(spec, option)
    if kind == "default":
        from .embedded import load_default_benchmark

        b = load_default_benchmark(seed=seed, n_aux=1)  # the auxiliary set is not used here
        return b.test, b.train, b
    if kind not in ID_KINDS:
        raise ValueError(f"{option} {spec!r}: in-distribution data must be default, {', '.join(ID_KINDS)}.")
    return (load_dataset_spec(kind, path, "test", False, option),
            load_dataset_spec(kind, path, "train", False, option), None)
