"""``benchmarks/gpu_check.py --dry-run``: every check runs on the CPU at tiny size, the
CUDA-only ones are skipped, exit code 0; a failing check makes the exit code 1."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(BENCH))
    threads = torch.get_num_threads()
    try:
        yield importlib.import_module("gpu_check")
    finally:
        sys.path.remove(str(BENCH))
        torch.set_num_threads(threads)


def test_dry_run_passes_and_skips_cuda_only(gpu_check, tmp_path, capsys):
    out = tmp_path / "g.json"
    assert gpu_check.main(["--dry-run", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    rows = {r["check"]: r for r in doc["results"]}
    names = [name for name, _, _ in gpu_check.checks(gpu_check.SIZES["dry"])]
    assert list(rows) == names and len(names) == 12
    cuda_only = {name for name, _, only in gpu_check.checks(gpu_check.SIZES["dry"]) if only}
    assert cuda_only == {n for n in names if "AMP" in n or "pinned" in n}
    for name, row in rows.items():
        assert row["status"] == ("skip" if name in cuda_only else "pass"), (name, row["detail"])
        assert row["peak_gpu_MB"] is None
    assert "backend gloo" in rows["DDP step: 1 process (NCCL on CUDA)"]["detail"]
    assert "38 variants" in rows["corruptions: all on device vs CPU (<= 1/255)"]["detail"]  # 19 x 2 severities
    assert doc["dry_run"] and doc["passed"] and doc["machine"]["device"] == "cpu"
    assert "| check" in printed and "9 passed, 0 failed, 3 skipped" in printed


def test_a_failing_check_fails_the_run(gpu_check, tmp_path, monkeypatch, capsys):
    def broken(dev, size):
        raise RuntimeError("device result differs")

    monkeypatch.setattr(gpu_check, "checks", lambda size: [("broken", broken, False), ("ok", lambda d, s: ("pass", ""),
                                                                                         False)])
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path / "g.json")]) == 1
    doc = json.loads((tmp_path / "g.json").read_text())
    assert [r["status"] for r in doc["results"]] == ["fail", "pass"] and not doc["passed"]
    assert "device result differs" in doc["results"][0]["detail"]
    capsys.readouterr()


def test_host_draws_are_device_independent(gpu_check):
    """The corruption comparison replays the same CPU draws on both devices."""
    a, b = gpu_check._HostDraws(5, torch.device("cpu")), gpu_check._HostDraws(5, torch.device("cpu"))
    assert torch.equal(a.uniform((2, 3), 0.0, 1.0), b.uniform((2, 3), 0.0, 1.0))
    assert torch.equal(a.normal((4,), 0.0, 1.0), b.normal((4,), 0.0, 1.0))
    assert torch.equal(a.poisson(torch.full((5,), 3.0)), b.poisson(torch.full((5,), 3.0)))
    high = torch.tensor([1, 5, 9])
    r = a.randint(high)
    assert torch.equal(r, b.randint(high)) and (r >= 0).all() and (r < high).all()
