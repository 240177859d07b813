"""``atom-ood demo --quick``: the whole pipeline end to end (numbers are not checked)."""
from __future__ import annotations

import json

import torch

from atom_plugin.cli import main
from atom_plugin.training import load_checkpoint


def test_demo_quick_writes_report_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    try:
        assert main(["demo", "--quick", "--quiet", "--threads", "1", "--out", str(out), "--seed", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    # the comparison table: one row per method, the four task groups
    assert "| OE" in printed and "| ATOM" in printed
    for title in ("Natural", "Corruption", "L∞", "Comp."):
        assert title in printed
    table = (out / "comparison.md").read_text()
    assert "| OE" in table and "| ATOM" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quick"] and summary["seed"] == 1
    for title in ("OE", "ATOM"):
        res = summary["results"][title]
        for task in ("natural", "corruption", "linf", "compositional"):
            assert 0.0 <= res[task]["fpr"] <= 1.0
        # attacks only lower the OOD score: attacked FPR >= natural FPR
        assert res["linf"]["fpr"] >= res["natural"]["fpr"] - 1e-9
    assert set(summary["check"]) >= {"atom_linf_fpr_below_oe", "atom_comp_fpr_below_oe"}
    for method in ("oe", "atom"):
        assert (out / method / "table.md").is_file() and (out / method / "report.json").is_file()
        ck = load_checkpoint(out / method / "train" / "last.pt")
        assert ck["epoch"] == summary["settings"]["epochs"]
    assert load_checkpoint(out / "atom" / "train" / "last.pt")["num_reject"] == 1
    assert load_checkpoint(out / "oe" / "train" / "last.pt")["num_reject"] == 0
    assert (out / "atom" / "mining_histograms.png").stat().st_size > 1000
    assert any(p.suffix == ".png" for p in (out / "atom").iterdir() if p.name != "mining_histograms.png")
    # same seed, same backbone: both models start from the same initialisation
    a = load_checkpoint(out / "oe" / "train" / "last.pt")["model"]
    b = load_checkpoint(out / "atom" / "train" / "last.pt")["model"]
    assert a.keys() == b.keys() and a["model.fc.weight"].shape[0] + 1 == b["model.fc.weight"].shape[0]
    assert torch.isfinite(b["model.fc.weight"]).all()
