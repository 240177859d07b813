"""Cost of the torchvision import-order hook for Python processes that never use atom_plugin.

The ``.pth`` line runs in every interpreter of the environment.  Measured here:

1. start-up: the site step of a fresh interpreter with the hook's ``.pth`` vs without
   it, interleaved (AB, BA, ...).  Both run ``python -S`` and time, inside the child,
   ``site.addsitedir`` on a scratch directory that holds (A) a compiled copy of the hook
   and its ``.pth`` or (B) nothing, so the only difference is the hook;
2. the hook module's own import time (``-X importtime``) in the real environment;
3. per-import overhead: the finder's ``find_spec`` on a non-torchvision name.

Prints a summary and writes ``benchmarks/results/import_hook.json``.
Usage: ``python benchmarks/bench_import_hook.py [--runs 30]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _startup(site_dir: str) -> float:
    # time measured inside the child: the site step only (interpreter start-up noise excluded);
    # cwd is the scratch dir, not the repository (whose uncompiled hook module would be found first)
    code = ("import time; t = time.perf_counter(); import site; site.addsitedir(%r); "
            "print(time.perf_counter() - t)" % site_dir)
    out = subprocess.run([sys.executable, "-S", "-c", code], check=True, capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    return float(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    import importlib.util

    with tempfile.TemporaryDirectory() as with_hook, tempfile.TemporaryDirectory() as without:
        import py_compile
        import shutil

        shutil.copy(os.path.join(ROOT, "_atom_plugin_import_hook.py"), with_hook)
        py_compile.compile(os.path.join(with_hook, "_atom_plugin_import_hook.py"), doraise=True)
        shutil.copy(os.path.join(ROOT, "atom_plugin_import_hook.pth"), with_hook)
        _startup(with_hook), _startup(without)  # warm the file cache
        a, b = [], []
        for i in range(args.runs):  # interleaved, alternating which goes first
            if i % 2:
                a.append(_startup(with_hook))
                b.append(_startup(without))
            else:
                b.append(_startup(without))
                a.append(_startup(with_hook))
    ratios = [x / y for x, y in zip(a, b)]

    times = []
    for _ in range(10):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True).stderr
        for line in out.splitlines():
            if line.rstrip().endswith("_atom_plugin_import_hook"):
                times.append(int(line.split("|")[1]))
    spec = importlib.util.spec_from_file_location("hook_bench", os.path.join(ROOT, "_atom_plugin_import_hook.py"))
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    hook.uninstall()
    n = 200_000
    per_call = min(timeit.repeat(lambda: hook._TorchvisionFinder.find_spec("json"), number=n, repeat=5)) / n

    res = {
        "python": sys.version.split()[0],
        "runs": args.runs,
        "site_step_with_hook_s": {"min": min(a), "median": statistics.median(a)},
        "site_step_without_hook_s": {"min": min(b), "median": statistics.median(b)},
        "extra_ms": {"min": (min(a) - min(b)) * 1e3, "median": (statistics.median(a) - statistics.median(b)) * 1e3},
        "ratio_with_over_without": {"min": min(ratios), "median": statistics.median(ratios)},
        "hook_import_time_us_in_env": {"min": min(times), "median": statistics.median(times)} if times else None,
        "find_spec_other_module_ns": per_call * 1e9,
        "note": "interleaved runs; the machine may be loaded by other processes",
    }
    print(json.dumps(res, indent=2))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "import_hook.json"), "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
