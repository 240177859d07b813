"""Smoke runs of every script in ``examples/`` (``--quick`` settings, in-process), checking
what they write and that the numbers behave (attacks only lower OOD scores, the third-party
scores equal the built-in detectors, best-of combiners are never worse, ...)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import atom_plugin  # noqa: F401

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TASKS = ("natural", "corruption", "linf", "compositional")


pytestmark = pytest.mark.usefixtures("one_thread")


def load(name: str):
    """Import ``examples/<name>.py`` as a module (its ``main(argv)`` is not run on import)."""
    spec = importlib.util.spec_from_file_location(f"atom_examples_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(name: str, out: Path, *args: str) -> dict:
    assert load(name).main([*args, "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def test_readme_lists_every_example():
    readme = (EXAMPLES / "README.md").read_text()
    for script in sorted(EXAMPLES.glob("*.py")):
        assert f"examples/{script.name}" in readme, script.name


def test_timm_atom(tmp_path):
    out = tmp_path / "timm"
    res = run("timm_atom", out, "--quick", "--quiet")
    # the stand-in "local weights file" is a plain timm state dict with its 1000-class head ...
    sd = torch.load(out / "weights.pth", weights_only=True)
    assert sd["head.fc.weight"].shape[0] == 1000
    # ... loaded as a K+1 model and trained with ATOM (checkpoint written by the trainer)
    assert res["num_classes"] == 10 and res["num_reject"] == 1
    ck = torch.load(out / "train" / "last.pt", weights_only=True)
    assert ck["config"]["method"] == "atom" and ck["epoch"] == 1
    assert ck["model"]["model.head.fc.weight"].shape[0] == 11
    for f in ("table.md", "report.json", "metrics.csv"):
        assert (out / f).is_file()
    # the reported FPR is the fraction of OOD images accepted at the 95%-TPR threshold of the ID scores
    rep = json.loads((out / "report.json").read_text())
    id_s = sorted(rep["scores"]["id"]["natural"])
    t = id_s[-(-95 * len(id_s) // 100) - 1]
    for task in TASKS:
        per_set = [sum(v <= t for v in rep["scores"]["ood"][s][task]) / len(rep["scores"]["ood"][s][task])
                   for s in rep["scores"]["ood"]]
        assert res["fpr"][task] == pytest.approx(sum(per_set) / len(per_set))
    # every attack keeps the clean image as a candidate: attacked FPR >= natural FPR
    assert res["fpr"]["linf"] >= res["fpr"]["natural"] - 1e-9
    assert res["fpr"]["corruption"] >= res["fpr"]["natural"] - 1e-9


def test_robustbench_detector(tmp_path):
    from importlib import metadata

    try:
        metadata.version("robustbench")  # not the torchattacks wheel's stale copy
    except metadata.PackageNotFoundError:
        pytest.skip("robustbench is not installed; pip install '.[robustbench]'")
    mod = load("robustbench_detector")
    # without --standin a missing checkpoint is an error naming the path, nothing downloaded
    with pytest.raises(FileNotFoundError, match="Wong2020Fast.pt"):
        mod.main(["--quick", "--quiet", "--out", str(tmp_path / "none"), "--detectors", "msp"])
    out = tmp_path / "rb"
    res = run("robustbench_detector", out, "--quick", "--quiet", "--standin", "--detectors", "msp", "mahalanobis")
    path = out / "models" / "cifar10" / "Linf" / "Wong2020Fast.pt"
    assert path.is_file() and res["checkpoint"] == str(path) and res["num_classes"] == 10
    assert set(res["detectors"]) == {"msp", "mahalanobis"}
    table = (out / "comparison.md").read_text()
    assert "| msp" in table and "| mahalanobis" in table
    for det, r in res["detectors"].items():
        assert (out / det / "report.json").is_file()
        assert r["fpr"]["linf"] >= r["fpr"]["natural"] - 1e-9, det
        assert r["fpr"]["compositional"] >= r["fpr"]["natural"] - 1e-9, det


def test_third_party_detector(tmp_path):
    res = run("third_party_detector", tmp_path, "--quick", "--quiet")
    try:
        import pytorch_ood  # noqa: F401

        have = True
    except Exception:
        have = False
    assert res["pytorch_ood"] is have
    for name, r in res["detectors"].items():
        assert r["max_abs_diff_to_builtin"] < 1e-5, name  # same scores as atom_plugin's Energy / MSP
        a = r["attacks"]
        for atk in ("OODFGSM", "OODPGD", "OODAPGD", "CorruptionAttack", "CompositionalAttack", "OODMultiAttack"):
            # best-of with the clean image: the mean OOD score never rises, acceptance never drops
            assert a[atk]["mean_score"] <= a["clean"]["mean_score"] + 1e-6, (name, atk)
            assert a[atk]["accepted"] >= a["clean"]["accepted"], (name, atk)
        assert a["OODPGD"]["mean_score"] < a["clean"]["mean_score"], name  # the gradient reaches the image
    assert "not differentiable" in res["mahalanobis_no_grad"]["gradient_attack_refused"]
    assert res["mahalanobis_no_grad"]["accepted_corruption"] >= res["mahalanobis_no_grad"]["accepted_clean"]


def test_third_party_fallback_matches_pytorch_ood(monkeypatch):
    mod = load("third_party_detector")
    model = torch.nn.Linear(5, 4)
    x = torch.randn(6, 5)
    monkeypatch.setitem(sys.modules, "pytorch_ood", None)  # makes `import pytorch_ood...` fail
    monkeypatch.setitem(sys.modules, "pytorch_ood.detector", None)
    energy, msp, _, real = mod.load_pytorch_ood()
    assert real is False
    ref_e = -torch.logsumexp(model(x), 1)
    ref_m = -torch.softmax(model(x), 1).amax(1)
    torch.testing.assert_close(energy(model).predict(x), ref_e)
    torch.testing.assert_close(msp(model).predict(x), ref_m)
    monkeypatch.undo()
    try:
        from pytorch_ood.detector import EnergyBased, MaxSoftmax
    except Exception:
        return
    torch.testing.assert_close(EnergyBased(model).predict(x), ref_e)
    torch.testing.assert_close(MaxSoftmax(model).predict(x), ref_m)


def test_multiattack(tmp_path):
    res = run("multiattack", tmp_path, "--quick", "--quiet")
    ood = res["ood"]
    assert res["oodmulti_never_worse"] is True
    # MultiAttack's first stage is the deterministic FGSM on every image; later stages only add successes
    assert ood["torchattacks.MultiAttack"]["accepted"] >= ood["OODFGSM"]["accepted"]
    for k in ("OODFGSM", "OODPGD", "OODAPGD", "OODMultiAttack", "torchattacks.MultiAttack"):
        assert ood[k]["accepted"] >= ood["clean"]["accepted"], k
    singles = max(ood[k]["objective"] for k in ("OODFGSM", "OODPGD", "OODAPGD"))
    assert ood["OODMultiAttack"]["objective"] >= singles - 1e-6
    assert sum(ood["OODMultiAttack"]["wins"].values()) == 48  # 6 OOD sets x 8 images
    c = res["classifier"]
    assert c["accuracy_pgd"] <= c["accuracy"]


def test_preprocessing_defense_modules():
    mod = load("preprocessing_defense")
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    # the untrained denoiser is the identity; the blur keeps constant images
    torch.testing.assert_close(mod.DenoisingAutoencoder()(x), x)
    flat = torch.full((1, 3, 8, 8), 0.3)
    torch.testing.assert_close(mod.GaussianBlur()(flat), flat)
    # quantization: zero gradient (masking) unless BPDA passes it straight through
    q, qb = mod.Quantize(3), mod.Quantize(3, bpda=True)
    torch.testing.assert_close(q(x), qb(x))
    (g,) = torch.autograd.grad(q(x).sum(), x, allow_unused=True)
    assert g is None or not g.any()
    (g,) = torch.autograd.grad(qb(x).sum(), x)
    torch.testing.assert_close(g, torch.ones_like(x))


def test_preprocessing_defense(tmp_path):
    res = run("preprocessing_defense", tmp_path, "--quick", "--quiet")
    assert set(res["pipelines"]) == {"none", "dae", "blur", "quantize", "quantize_bpda"}
    table = (tmp_path / "comparison.md").read_text()
    for name in res["pipelines"]:
        assert f"| {name}" in table
        assert (tmp_path / name / "report.json").is_file()
        r = res["pipelines"][name]
        assert r["fpr"]["linf"] >= r["fpr"]["natural"] - 1e-9, name
    # BPDA changes only the backward pass: the clean numbers are identical
    assert res["pipelines"]["quantize"]["fpr"]["natural"] == res["pipelines"]["quantize_bpda"]["fpr"]["natural"]
    assert res["pipelines"]["quantize"]["accuracy"] == res["pipelines"]["quantize_bpda"]["accuracy"]


def test_gaussian_theory(tmp_path):
    assert load("gaussian_theory").main(["--dims", "16", "1024", "--n-eval", "200", "--no-plot",
                                         "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    at = {(r["detector"], r["d"]): r for r in rows}
    # Proposition 1: with U_mix the averaging detector fails, outlier mining succeeds, more so as d grows
    assert at[("averaging", 1024)]["fnr"] > 0.9 and at[("averaging", 1024)]["worst_fpr"] > 0.9
    assert at[("mining", 1024)]["fnr"] < 1e-4 and at[("mining", 1024)]["worst_fpr"] < 0.05
    assert at[("mining", 1024)]["worst_fpr"] < at[("mining", 16)]["worst_fpr"]
