"""Smoke runs of the benchmark scripts with tiny settings: each runs and writes its JSON with
the expected structure and the counted (not timed) quantities right.  No timing assertions,
and no re-derivation of a ratio from the script's own formula."""
from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench_module():
    sys.path.insert(0, str(BENCH))
    threads = torch.get_num_threads()
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
        torch.set_num_threads(threads)


def _run(mod, argv, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert mod.main(argv + ["--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    m = doc["machine"]
    assert m["device"] == "cpu" and m["threads"] == 1 and m["torch"] == torch.__version__
    assert len(m["loadavg_before"]) == 3 and len(m["loadavg_after"]) == 3
    assert "|" in printed and str(out) in printed  # a table was printed, and the path
    return doc


def test_common_helpers(bench_module):
    C = bench_module("_common")
    t = C.table([{"a": 1, "b": 0.5}, {"a": 22, "b": None}])
    lines = t.splitlines()
    assert lines[0].split("|")[1].strip() == "a" and len(lines) == 4 and "0.5" in lines[2]
    assert C.summary([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0, "n": 3}
    sw = C.Stopwatch("cpu")
    f = sw.wrap("x", lambda v: v + 1)
    assert f(1) == 2 and f(2) == 3 and sw.calls["x"] == 2 and set(sw.totals) == {"x"}


def test_bench_attack(bench_module, tmp_path, capsys):
    doc = _run(bench_module("bench_attack"), ["--batch", "4", "--steps", "2", "--width", "2", "--repeats", "1"],
               tmp_path, capsys)
    (row,) = doc["results"]
    assert (row["batch"], row["steps"]) == (4, 2)
    # both take one forward + backward per step; OODPGD's first gradient is taken at the input
    # (which makes the input a candidate for free) and it adds only the forward at the last iterate
    assert (row["pgd_forwards"], row["pgd_backwards"]) == (2, 2)
    assert (row["oodpgd_forwards"], row["oodpgd_backwards"]) == (3, 2)
    assert set(doc["overhead"][0]) >= {"fwd_bwd_step_ms", "extra_forward_ms", "keep_best_all_steps_ms",
                                       "predicted_overhead"}


def test_bench_mining(bench_module, tmp_path, capsys):
    mod = bench_module("bench_mining")
    ds = mod.LazyOutliers(50, seed=0)
    b = ds.get_batch([3, 7, 3])
    assert b.shape == (3, 3, 32, 32) and torch.equal(b[0], b[2]) and torch.equal(b[1], ds[7][0])
    assert float(b.min()) >= 0 and float(b.max()) <= 1 and not torch.equal(b[0], b[1])
    doc = _run(mod, ["--throughput-pool", "64", "--pool", "64", "128", "--batch-size", "32", "--width", "2",
                     "--mem-width", "2", "--repeats", "1", "--sweep", "16", "64"], tmp_path, capsys)
    (thr,) = doc["throughput"]
    assert thr["N"] == 64
    assert [r["score_batch_size"] for r in doc["batch_sweep"]] == [16, 64]
    assert [m["N"] for m in doc["memory"]] == [64, 128]
    assert [m["selected"] for m in doc["memory"]] == [16, 32]


def test_bench_epoch(bench_module, tmp_path, capsys):
    doc = _run(bench_module("bench_epoch"), ["--steps", "1", "--width", "2", "--pool-factor", "2", "--repeats", "1",
                                             "--select-factor", "1"], tmp_path, capsys)
    rows = {r["method"]: r for r in doc["results"]}
    assert set(rows) == {"atom", "ntom", "oe"}
    assert rows["oe"]["vs_oe"] == 1.0 and rows["oe"]["mining_s"] == 0.0 and rows["oe"]["N"] is None
    assert rows["atom"]["N"] == 128 and rows["atom"]["n"] == 64
    for r in rows.values():
        assert r["steps"] == 1 and math.isfinite(r["loss"])


def test_bench_eval(bench_module, tmp_path, capsys):
    doc = _run(bench_module("bench_eval"), ["--images", "4", "--steps", "1", "--width", "2", "--batch-size", "4",
                                            "--repeats", "1"], tmp_path, capsys)
    rows = {r["task"]: r for r in doc["results"]}
    assert list(rows) == ["natural", "corruption", "linf", "compositional"]
    assert doc["settings"]["n_id"] == 4
    # the compositional task reuses the corruption task's search: exactly one search of the
    # 15 x 5 candidates plus the clean image (76 forwards per OOD image) is saved
    mf = doc["model_forwards"]
    assert mf["without_reuse"] - mf["with_reuse"] == 76 * 4
    # tasks the reuse does not touch give the same FPR either way
    for task in ("natural", "corruption", "linf"):
        assert doc["fpr_without_reuse"][task] == rows[task]["fpr"]


def test_bench_corruptions_smoke(bench_module, tmp_path, capsys):
    mod = bench_module("bench_corruptions")
    out = tmp_path / "c.json"
    assert mod.main(["--batch", "3", "--ref-images", "1", "--repeats", "1", "--no-accuracy", "--threads", "1",
                     "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["torch_threads"] == 1 and doc["reference"]["images"] == 1
    (run,) = doc["runs"]
    for key, n in (("75", 15), ("95", 19)):
        r = run[key]
        assert len(r["per_corruption_ms_per_image"]) == n
