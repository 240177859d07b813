"""Shared helpers of the benchmark scripts: argument parsing, device-aware timing,
machine information, peak-memory probes, tables and JSON output.

Every script takes ``--device`` (``cpu``, ``cuda``, ``cuda:1``, ...), ``--out`` (a JSON
file, default under ``benchmarks/results/``) and ``--threads``; it prints a Markdown table
and writes a JSON file that also records the machine (torch version, device, threads,
``os.getloadavg()`` before and after the run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- setup
def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the options every benchmark shares."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--out", default=str(RESULTS_DIR / default_out),
                   help=f"JSON output path (default benchmarks/results/{default_out})")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads``/``--seed`` and return the ``--device`` (checked to exist)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available in this torch build/machine.")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def make_model(num_classes: int = 10, width: int = 32, device: torch.device | str = "cpu", reject: bool = True,
               seed: int = 0) -> torch.nn.Module:
    """A ``Normalize(SmallCNN)`` with a K+1 head (``reject=True``), in eval mode on ``device``."""
    from atom_plugin.models import Normalize, SmallCNN, with_reject_head

    torch.manual_seed(seed)
    model = Normalize(SmallCNN(num_classes, width=width), [0.5] * 3, [0.25] * 3)
    if reject:
        model = with_reject_head(model, num_classes)
    return model.to(device).eval()


# ---------------------------------------------------------------------------- timing
def sync(device: torch.device | str) -> None:
    """Wait for queued kernels (CUDA only; a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[float, Any]:
    """``(seconds, result)`` of one call of ``fn``, synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device | str, repeats: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Time several functions alternately (A B C A B C ...) so slow drifts of a shared
    machine's load hit all of them alike.  Returns ``{name: [seconds per repeat]}``."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        names = list(fns) if r % 2 == 0 else list(reversed(fns))  # also alternate the order
        for k in names:
            out[k].append(timed(fns[k], device)[0])
    return out


def summary(times: Sequence[float]) -> dict[str, float]:
    """min / median / max of a list of seconds."""
    return {"min": min(times), "median": statistics.median(times), "max": max(times), "n": len(times)}


class Stopwatch:
    """Accumulates device-synchronised time per label: ``with sw("mining"): ...``."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def __call__(self, label: str):
        sw = self

        class _Ctx:
            def __enter__(self_inner):
                sync(sw.device)
                self_inner.t0 = time.perf_counter()

            def __exit__(self_inner, *exc):
                sync(sw.device)
                sw.totals[label] = sw.totals.get(label, 0.0) + time.perf_counter() - self_inner.t0
                sw.calls[label] = sw.calls.get(label, 0) + 1
                return False

        return _Ctx()

    def wrap(self, label: str, fn: Callable) -> Callable:
        """``fn`` timed under ``label`` on every call."""

        def inner(*a, **kw):
            with self(label):
                return fn(*a, **kw)

        return inner


# ---------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def release_freed_memory() -> None:
    """Garbage-collect and return freed heap memory to the OS (glibc ``malloc_trim``), so
    that the resident size before a measurement does not hold pages a later allocation
    would silently reuse.  A no-op where unavailable."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset the process' peak resident set size (Linux ``/proc/self/clear_refs``);
    False where that is not possible (then :func:`peak_rss_bytes` is the lifetime peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process in bytes (since the last reset)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r) * (1 if sys.platform == "darwin" else 1024)
    except Exception:  # pragma: no cover - non-POSIX
        return None


def rss_bytes() -> int | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


# --------------------------------------------------------------------------- records
def machine_info(device: torch.device | str) -> dict[str, Any]:
    """torch version, device (and GPU name), threads, CPU count, platform, load average."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import torchattacks

        info["torchattacks"] = torchattacks.__version__
    except Exception:  # pragma: no cover
        pass
    return info


def write_json(path: str | os.PathLike, payload: dict[str, Any], machine_before: dict[str, Any]) -> Path:
    """Write ``payload`` plus ``machine`` (with the load average before and after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = dict(machine_before)
    machine["loadavg_before"] = machine.pop("loadavg", None)
    machine["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    doc = {"machine": machine, **payload}
    path.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".4g") -> str:
    """A Markdown table of ``rows`` (dicts) with ``columns`` (default: keys of the first row)."""
    rows = list(rows)
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def machine_line(info: dict[str, Any]) -> str:
    load = info.get("loadavg") or info.get("loadavg_before")
    load_s = "n/a" if not load else "/".join(f"{v:.2f}" for v in load)
    return (f"torch {info['torch']}, device {info['device']}{' (' + info['gpu'] + ')' if 'gpu' in info else ''}, "
            f"{info['threads']} threads, {info['cpu_count']} CPUs, load average {load_s}")
