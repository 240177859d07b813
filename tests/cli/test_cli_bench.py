"""atom-ood bench (leaderboard), eval's output-folder rules, --device, --detector-arg, --attack."""
from __future__ import annotations

import json

import pytest
import torch

from atom_plugin.cli import main
from atom_plugin.models import Normalize, SmallCNN, with_reject_head


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = with_reject_head(Normalize(SmallCNN(10, width=4), [0.2] * 3, [0.2] * 3), 10)
    path = tmp_path_factory.mktemp("ck") / "last.pt"
    torch.save({"arch": "smallcnn", "num_classes": 10, "num_reject": 1, "model": m.state_dict()}, path)
    return path


FAST = ["--ood", "default:uniform", "--max-examples", "6", "--steps", "2", "--corruptions", "contrast",
        "--severities", "1", "--quiet", "--no-plots"]


def test_bench_writes_one_leaderboard(ckpt, tmp_path):
    out = tmp_path / "lb"
    rc = main(["bench", "--checkpoint", str(ckpt), "--detectors", "msp,energy", "reject", "--tasks", "natural", "linf",
               "--out", str(out)] + FAST)
    assert rc == 0
    table = (out / "leaderboard.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert [r.split("|")[1].strip() for r in rows] == ["msp", "energy", "reject"]
    d = json.loads((out / "comparison.json").read_text())
    assert set(d) == {"msp", "energy", "reject"}
    for name in ("msp", "energy", "reject"):
        rep = json.loads((out / name / "report.json").read_text())
        assert rep["config"]["eval_config"]["tasks"] == ["natural", "linf"]


def test_bench_skips_a_detector_that_does_not_fit_the_head(tmp_path, capsys):
    torch.manual_seed(0)
    kway = Normalize(SmallCNN(10, width=4), [0.2] * 3, [0.2] * 3)
    path = tmp_path / "k.pt"
    torch.save(kway.state_dict(), path)
    out = tmp_path / "lb"
    rc = main(["bench", "--checkpoint", str(path), "--num-classes", "10", "--num-reject", "0", "--detectors", "msp",
               "reject", "--tasks", "natural", "--out", str(out)] + FAST)
    assert rc == 0
    assert "reject" in (out / "skipped.txt").read_text() and (out / "msp" / "report.json").exists()


def test_eval_refuses_used_out_dir_and_file_out(ckpt, tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "table.md").write_text("old")
    args = ["eval", "--checkpoint", str(ckpt), "--tasks", "natural"] + FAST
    assert main(args + ["--out", str(used)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (used / "table.md").read_text() == "old"
    assert main(args + ["--out", str(used), "--overwrite"]) == 0
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(args + ["--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(args + ["--out", str(f / "sub")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--device", "bogus"], "--device"),
    (["--detector", "odin", "--detector-arg", "temprature=3"], "temprature"),
    (["--detector-arg", "novalue"], "KEY=VALUE"),
    (["--attack", "pgd", "--tasks", "bogus"], "--tasks"),
])
def test_input_errors_exit_2_with_one_sentence(ckpt, tmp_path, argv, needle, capsys):
    rc = main(["eval", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")] + FAST + argv)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err


def test_detector_arg_reaches_the_detector(ckpt, tmp_path):
    out = tmp_path / "o"
    rc = main(["eval", "--checkpoint", str(ckpt), "--detector", "energy", "--detector-arg", "temperature=2.5",
               "--tasks", "natural", "--out", str(out)] + FAST)
    assert rc == 0
    # the energy score at T=2.5 differs from T=1: recompute independently
    rep = json.loads((out / "report.json").read_text())
    from atom_plugin.data import load_default_benchmark
    from atom_plugin.pretrained import load_checkpoint_model

    model, k = load_checkpoint_model(str(ckpt))
    x = torch.stack([load_default_benchmark(n_aux=1).test[i][0] for i in range(6)])
    with torch.no_grad():
        z = model(x)[:, :k]
    expected = (-2.5 * torch.logsumexp(z / 2.5, dim=1)).numpy()
    assert rep["scores"]["id"]["natural"] == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-6)
