"""`atom-ood eval` and `atom-ood attack` end to end on the embedded benchmark."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atom_plugin.cli import main
from atom_plugin.data import load_npy_images
from atom_plugin.metrics import ood_metrics
from atom_plugin.models import Normalize, SmallCNN, with_reject_head


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint in the trainer's format (dict with model / num_classes / num_reject)."""
    torch.manual_seed(0)
    m = with_reject_head(Normalize(SmallCNN(10, width=4), [0.2] * 3, [0.2] * 3), 10)
    path = tmp_path_factory.mktemp("ck") / "last.pt"
    torch.save({"format": "atom_plugin.training/1", "config": {"method": "atom"}, "arch": "smallcnn", "num_classes": 10,
                "num_reject": 1, "model": m.state_dict()}, path)
    bare = path.parent / "bare.pt"
    torch.save(m.state_dict(), bare)
    return path, bare


@pytest.mark.parametrize("cmd", ["eval", "attack"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--checkpoint" in out and "--robustbench" in out and "--detector" in out
    assert ("--tasks" in out and "--attack-id" in out) if cmd == "eval" else ("--method" in out and "--format" in out)


def test_eval_checkpoint_writes_report(ckpt, tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["eval", "--checkpoint", str(ckpt[0]), "--tasks", "natural,linf", "--steps", "1",
               "--max-examples", "6", "--batch-size", "6", "--out", str(out), "--quiet", "--name", "ATOM"])
    assert rc == 0
    assert capsys.readouterr().out.strip().endswith("rep")
    for f in ("table.md", "report.json", "metrics.csv", "roc.png", "histograms.png", "examples.png"):
        assert (out / f).stat().st_size > 0, f
    d = json.loads((out / "report.json").read_text())
    assert d["name"] == "ATOM" and d["config"]["detector"] == "RejectClass"  # K+1 checkpoint -> reject score
    assert set(d["metrics"]) == {"photos", "textures", "faces", "blobs", "gaussian", "uniform"}
    id_s = np.asarray(d["scores"]["id"]["natural"])
    assert id_s.shape == (6,)
    for s, tm in d["metrics"].items():
        for task in ("natural", "linf"):
            ref = ood_metrics(id_s, d["scores"]["ood"][s][task])
            assert tm[task]["auroc"] == pytest.approx(ref["auroc"]) and tm[task]["fpr"] == pytest.approx(ref["fpr"])


def test_eval_bare_state_dict_and_msp(ckpt, tmp_path):
    out = tmp_path / "rep2"
    rc = main(["eval", "--checkpoint", str(ckpt[1]), "--num-classes", "10", "--detector", "energy",
               "--ood", "default:uniform", "default:faces", "--tasks", "natural", "--max-examples", "5",
               "--out", str(out), "--quiet", "--no-plots"])
    assert rc == 0
    d = json.loads((out / "report.json").read_text())
    assert list(d["metrics"]) == ["uniform", "faces"] and d["config"]["detector"] == "Energy"
    assert not (out / "roc.png").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--checkpoint", "/nonexistent/x.pt"], "--checkpoint"),
    (["--tasks", "natural,fgsm"], "--tasks"),
    (["--data", "mnist:/x"], "--data"),
    (["--ood", "svhn"], "--ood"),
    (["--ood", "svhn:/nonexistent"], "--ood svhn:/nonexistent"),
    (["--steps", "0"], "--steps"),
    (["--arch", "no_such_arch", "--num-classes", "10", "--num-reject", "1"], "--arch"),
])
def test_eval_errors_name_the_option(ckpt, argv, needle, capsys):
    base = ["eval", "--quiet", "--max-examples", "2"]
    if "--checkpoint" not in argv:
        base += ["--checkpoint", str(ckpt[0])]
    rc = main(base + argv)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err


def test_timm_needs_num_classes(capsys):
    assert main(["eval", "--timm", "resnet18", "--weights", "x.pth"]) == 2
    assert "--num-classes" in capsys.readouterr().err


def test_attack_writes_npy_and_png(ckpt, tmp_path):
    out = tmp_path / "adv"
    rc = main(["attack", "--checkpoint", str(ckpt[0]), "--data", "default:uniform", "--steps", "2",
               "--max-examples", "5", "--batch-size", "3", "--format", "uint8", "--png", "2", "--out", str(out),
               "--quiet"])
    assert rc == 0
    ds = load_npy_images(str(out / "uniform" / "images.npy"))  # loadable by the data API
    assert len(ds) == 5 and ds[0][0].shape == (3, 32, 32)
    scores = np.load(out / "uniform" / "scores.npy", allow_pickle=False)
    assert scores.shape == (5, 2) and np.all(scores[:, 1] <= scores[:, 0] + 1e-6)  # attack lowers OOD scores
    assert sorted(p.name for p in (out / "uniform").glob("*.png")) == ["00000.png", "00001.png"]
    meta = json.loads((out / "attack.json").read_text())
    assert meta["attack"] == "OODPGD" and meta["sets"]["uniform"]["n"] == 5

    out2 = tmp_path / "adv_f32"
    assert main(["attack", "--checkpoint", str(ckpt[0]), "--data", "default:uniform", "--method", "in",
                 "--steps", "2", "--max-examples", "3", "--png", "0", "--out", str(out2), "--quiet"]) == 0
    imgs = np.load(out2 / "uniform" / "images.npy", allow_pickle=False)
    assert imgs.dtype == np.float32 and imgs.shape == (3, 3, 32, 32) and imgs.min() >= 0 and imgs.max() <= 1
    sc = np.load(out2 / "uniform" / "scores.npy", allow_pickle=False)
    assert np.all(sc[:, 1] >= sc[:, 0] - 1e-6)  # "in" raises OOD scores


def test_attack_errors(ckpt, capsys):
    assert main(["attack", "--checkpoint", str(ckpt[0]), "--data", "default:nope", "--out", "/tmp/x"]) == 2
    assert "--data" in capsys.readouterr().err


def test_eval_timm_model_from_local_weights(tmp_path):
    """`--timm NAME --weights FILE`: a timm model built offline from a local file."""
    import timm

    torch.manual_seed(0)
    ref = timm.create_model("resnet10t", num_classes=10)
    weights = tmp_path / "resnet10t.pth"
    torch.save(ref.state_dict(), weights)
    out = tmp_path / "rep"
    rc = main(["eval", "--timm", "resnet10t", "--weights", str(weights), "--num-classes", "10",
               "--ood", "default:uniform", "--tasks", "natural,linf", "--steps", "1", "--max-examples", "4",
               "--out", str(out), "--quiet", "--no-plots"])
    assert rc == 0
    d = json.loads((out / "report.json").read_text())
    assert d["config"]["detector"] == "MSP" and list(d["metrics"]) == ["uniform"]  # K-way -> MSP
    assert len(d["scores"]["id"]["natural"]) == 4


def test_eval_robustbench_model_from_model_dir(tmp_path):
    """`--robustbench NAME --model-dir DIR`: reads <DIR>/cifar10/Linf/<NAME>.pt, no download."""
    import os

    from importlib import metadata

    try:
        metadata.version("robustbench")  # the torchattacks wheel's stale robustbench/ copy has no metadata
    except metadata.PackageNotFoundError:
        pytest.skip("robustbench is not installed; pip install '.[robustbench]'")
    rb_zoo = pytest.importorskip("robustbench.model_zoo.cifar10")
    from atom_plugin.pretrained import robustbench_checkpoint_path

    torch.manual_seed(0)
    net = rb_zoo.Ding2020MMANet().eval()
    path = robustbench_checkpoint_path("Ding2020MMA", str(tmp_path))
    os.makedirs(os.path.dirname(path))
    torch.save({"state_dict": net.state_dict()}, path)
    out = tmp_path / "rep"
    rc = main(["eval", "--robustbench", "Ding2020MMA", "--model-dir", str(tmp_path), "--detector", "energy",
               "--ood", "default:gaussian", "--tasks", "natural", "--max-examples", "3", "--out", str(out),
               "--quiet", "--no-plots"])
    assert rc == 0
    d = json.loads((out / "report.json").read_text())
    assert d["config"]["detector"] == "Energy" and len(d["scores"]["ood"]["gaussian"]["natural"]) == 3
    missing = main(["eval", "--robustbench", "Wong2020Fast", "--model-dir", str(tmp_path), "--quiet",
                    "--out", str(tmp_path / "x")])
    assert missing == 2


class _Code:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_unreadable_checkpoint_is_an_input_error(tmp_path, capsys):
    code = tmp_path / "code.pt"
    torch.save({"model": _Code()}, code)  # a pickle with code in it: refused, not run
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for path in (code, junk):
        assert main(["eval", "--checkpoint", str(path), "--quiet", "--out", str(tmp_path / "o")]) == 2
        captured = capsys.readouterr()
        assert "--checkpoint" in captured.err and "weights-only" in captured.err
        assert "Traceback" not in captured.err and "unpickled" not in captured.out
