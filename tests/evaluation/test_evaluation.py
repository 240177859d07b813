"""atom_plugin.evaluation + atom_plugin.report: end-to-end on the embedded benchmark,
agreement with direct metric computation, reproducibility, file outputs, 2 processes."""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from atom_plugin import distributed as D
from atom_plugin.detectors import MSP, RejectClass
from atom_plugin.evaluation import evaluate
from atom_plugin.models import Normalize, SmallCNN, with_reject_head
from atom_plugin.report import Comparison, Report, compare_table

TASKS4 = ("natural", "corruption", "linf", "compositional")


def _blur(x):
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1)


def _corruption_settings():
    """The real corruption attacks on a small subset of corruptions."""
    return {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3]}


def _tiny_kplus1(mean=(0.5,) * 3, std=(0.25,) * 3):
    torch.manual_seed(0)
    return with_reject_head(Normalize(SmallCNN(10, width=4), mean, std), 10).eval()


def _synthetic(n, seed, labels=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g) if labels else torch.full((n,), -1)
    return TensorDataset(x, y)


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory):
    from atom_plugin.data import load_default_benchmark

    b = load_default_benchmark(n_aux=8, n_ood_per_set=8)
    det = RejectClass(_tiny_kplus1(b.mean, b.std))
    rep = evaluate(det, b.test, b.ood, tasks=TASKS4, steps=2, batch_size=8, max_examples_per_set=16,
                   attack_id=True, progress=False, keep_examples=3, seed=0, name="tiny",
                   **_corruption_settings())
    folder = tmp_path_factory.mktemp("report")
    paths = rep.save(folder)
    return b, det, rep, folder, paths


def test_full_report_on_embedded_benchmark(bench_report):
    b, det, rep, folder, paths = bench_report
    assert rep.sets == list(b.ood)
    assert rep.tasks == list(TASKS4) + ["in", "in_out"]
    for s in rep.sets:
        assert set(rep.metrics[s]) == set(rep.tasks)
        assert rep.scores["ood"][s]["natural"].shape == (8,)  # sets have 8 images
    assert rep.scores["id"]["natural"].shape == (16,)  # truncated by max_examples_per_set
    # files
    for key in ("table", "json", "csv", "examples_npz", "roc", "histograms", "examples"):
        assert os.path.getsize(paths[key]) > 0, key
    d = json.loads((folder / "report.json").read_text())
    assert {"metrics", "mean", "id_metrics", "config", "scores"} <= set(d)
    assert {"accuracy", "e2e_accuracy", "fnr", "threshold", "tpr_in", "e2e_accuracy_in"} <= set(d["id_metrics"])
    assert set(d["mean"]) == set(rep.tasks)
    csv_lines = (folder / "metrics.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("name,set,task,fpr,auroc")
    assert len(csv_lines) == 1 + (len(rep.sets) + 1) * len(rep.tasks)
    table = (folder / "table.md").read_text()
    for s in rep.sets:
        assert f"| {s} |" in table
    assert "Natural FPR↓" in table and "Comp. AUROC↑" in table and "**mean**" in table


def _independent_metrics(id_s, ood_s, tpr=0.95):
    """FPR at 95% TPR (ID positive), AUROC and AUPR-in/out from numpy and scikit-learn, not
    from atom_plugin.metrics."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = int(np.ceil(tpr * id_s.size - 1e-9))
    t = np.sort(id_s)[k - 1]  # the k-th smallest ID score keeps >= 95% of ID
    y_id = np.r_[np.ones(id_s.size), np.zeros(ood_s.size)]  # ID positive; lower score = more ID
    s = np.r_[id_s, ood_s]
    return {"fpr": float(np.mean(ood_s <= t)), "auroc": roc_auc_score(y_id, -s),
            "aupr_in": average_precision_score(y_id, -s), "aupr_out": average_precision_score(1 - y_id, s)}, t


def test_metrics_match_independent_references(bench_report):
    _, _, rep, _, _ = bench_report
    id_nat, id_in = rep.scores["id"]["natural"], rep.scores["id"]["in"]
    _, thr = _independent_metrics(id_nat, id_nat)
    assert rep.id_metrics["threshold"] == thr
    assert rep.id_metrics["fnr"] == pytest.approx(np.mean(id_nat > thr))
    assert rep.id_metrics["e2e_accuracy"] <= rep.id_metrics["accuracy"]
    for s in rep.sets:
        sc = rep.scores["ood"][s]
        for task in TASKS4:
            ref, _ = _independent_metrics(id_nat, sc[task])
            got = rep.metrics[s][task]
            for k, v in ref.items():
                # sklearn's average precision is a step sum; ours interpolates ties identically
                assert got[k] == pytest.approx(v, abs=1e-9), (s, task, k)
        ref_in, _ = _independent_metrics(id_in, sc["natural"])
        assert rep.metrics[s]["in"]["auroc"] == pytest.approx(ref_in["auroc"])
        assert rep.metrics[s]["in_out"]["auroc"] == pytest.approx(_independent_metrics(id_in, sc["linf"])[0]["auroc"])
        assert rep.metrics[s]["in"]["tpr_at_threshold"] == pytest.approx(np.mean(id_in <= thr))
    for task in rep.tasks:
        assert rep.get("mean", task, "fpr") == pytest.approx(np.mean([rep.metrics[s][task]["fpr"] for s in rep.sets]))


def test_attacks_move_scores_the_right_way(bench_report):
    _, _, rep, _, _ = bench_report
    # L-inf PGD keeps the best iterate including the clean input: OOD scores never rise
    for s in rep.sets:
        sc = rep.scores["ood"][s]
        assert np.all(sc["linf"] <= sc["natural"] + 1e-6)
        # the corruption attack counts the clean image as a candidate, PGD keeps its centre
        assert np.all(sc["corruption"] <= sc["natural"] + 1e-6)
        assert np.all(sc["compositional"] <= sc["natural"] + 1e-6)
        wins = rep.config.get("corruption_wins")
        if wins is not None:  # real CorruptionAttack: a win histogram per set and task
            assert sum(wins[s]["corruption"].values()) == sc["corruption"].size
    # the "in" attack pushes ID scores up
    assert np.all(rep.scores["id"]["in"] >= rep.scores["id"]["natural"] - 1e-6)
    assert rep.scores["id"]["in"].mean() > rep.scores["id"]["natural"].mean()


def test_report_roundtrip_and_comparison(bench_report, tmp_path):
    _, _, rep, folder, _ = bench_report
    back = Report.load(folder)
    assert back.table() == rep.table() and back.to_csv() == rep.to_csv()
    assert set(back.examples) == set(rep.examples)
    assert back.examples["photos"]["linf"].dtype == np.uint8
    back2 = Report.from_json(rep.to_json(include_scores=False))
    assert back2.get("mean", "linf", "fpr") == rep.get("mean", "linf", "fpr") and not back2.scores
    comp = Report.combine({"OE": rep, "ATOM": back})
    assert isinstance(comp, Comparison)
    t = comp.table()
    assert "| OE |" in t and "| ATOM |" in t and "ID acc↑" in t
    assert compare_table({"OE": rep}, set_name="photos", metrics=("fpr", "aupr_in")).count("\n") == 2
    p = comp.save(tmp_path)
    assert Comparison.from_json(p["json"]).table() == t
    with pytest.raises(ValueError, match="set_name"):
        rep.get("nope", "linf", "fpr")


def _tiny_eval(seed, **kw):
    det = MSP(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3).eval(), 10)
    torch.manual_seed(0)
    det.model.load_state_dict(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3).state_dict())
    kw = {"tasks": ("natural", "linf"), "steps": 2, "progress": False, "batch_size": 4, "seed": seed, **kw}
    return evaluate(det, _synthetic(10, 1), {"a": _synthetic(9, 2, labels=False)}, **kw)


def test_seeded_reproducible_and_loader_equivalent():
    r1, r3 = _tiny_eval(0), _tiny_eval(1)
    assert not np.array_equal(r1.scores["ood"]["a"]["linf"], r3.scores["ood"]["a"]["linf"])  # random starts
    # same seed again, through DataLoaders (sequential): the same numbers as the Datasets
    det = MSP(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3).eval(), 10)
    torch.manual_seed(0)
    det.model.load_state_dict(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3).state_dict())
    r4 = evaluate(det, DataLoader(_synthetic(10, 1), batch_size=4), {"a": DataLoader(_synthetic(9, 2), batch_size=4)},
                  tasks=("natural", "linf"), steps=2, progress=False, seed=0)
    np.testing.assert_array_equal(r1.scores["ood"]["a"]["linf"], r4.scores["ood"]["a"]["linf"])
    assert r1.id_metrics == r4.id_metrics


def test_bare_images_no_labels_and_truncation():
    det = MSP(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3).eval(), 10)
    x_id = _synthetic(10, 1).tensors[0]
    gen = (x_id[i:i + 3] for i in range(0, 10, 3))  # a plain iterable of bare image batches
    rep = evaluate(det, list(gen), {"a": _synthetic(9, 2)}, tasks=("natural",), progress=False,
                   max_examples_per_set=5)
    assert "accuracy" not in rep.id_metrics and rep.id_metrics["n_id"] == 5
    assert rep.scores["ood"]["a"]["natural"].shape == (5,)
    assert "accuracy" not in rep.table()


def test_bad_arguments():
    det = MSP(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3).eval(), 10)
    ds = _synthetic(4, 0)
    with pytest.raises(ValueError, match="tasks"):
        evaluate(det, ds, {"a": ds}, tasks=("natural", "fgsm"), progress=False)
    with pytest.raises(ValueError, match="ood_sets"):
        evaluate(det, ds, {}, progress=False)
    with pytest.raises(ValueError, match="steps"):
        evaluate(det, ds, {"a": ds}, steps=0, progress=False)
    with pytest.raises(ValueError, match="attacks"):
        evaluate(det, ds, {"a": ds}, tasks=("natural",), attacks={"linf": _blur}, progress=False)
    with pytest.raises(ValueError, match="batchsize"):  # a typo is refused, not dropped
        evaluate(det, ds, {"a": ds}, tasks=("corruption",), corruption_kwargs={"batchsize": 8}, progress=False)
    with pytest.raises(ValueError, match=r"evaluate\(seed"):  # would be overridden per batch
        evaluate(det, ds, {"a": ds}, tasks=("corruption",), corruption_kwargs={"seed": 3}, progress=False)
    bad = TensorDataset(torch.rand(4, 3, 32, 32) * 255, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate(det, bad, {"a": ds}, tasks=("natural",), progress=False)
    late = TensorDataset(torch.cat([torch.rand(4, 3, 32, 32), 2 * torch.ones(4, 3, 32, 32)]),
                         torch.zeros(8, dtype=torch.long))  # only the second batch is out of range
    with pytest.raises(ValueError, match=r"ood_sets\['late'\].*\[0, 1\]"):
        evaluate(det, ds, {"late": late}, tasks=("natural",), batch_size=4, progress=False)
    det.fitted = False
    with pytest.raises(ValueError, match="fit"):
        evaluate(det, ds, {"a": ds}, progress=False)


# ------------------------------------------------------------------ two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    D.init_from_env()
    try:
        rep = _tiny_eval(0, attack_id=True, max_examples_per_set=9, tasks=TASKS4,
                         corruptions=["gaussian_noise", "contrast"], severities=[1, 3])
        if D.is_main_process():
            rep.to_json(os.path.join(out_dir, "ddp.json"))
    finally:
        D.destroy()


def test_two_processes_match_one(tmp_path):
    single = _tiny_eval(0, attack_id=True, max_examples_per_set=9, tasks=TASKS4,
                        corruptions=["gaussian_noise", "contrast"], severities=[1, 3])
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    multi = Report.from_json(tmp_path / "ddp.json")
    assert multi.config["world_size"] == 2 and single.config["world_size"] == 1
    np.testing.assert_allclose(multi.scores["id"]["natural"], single.scores["id"]["natural"], atol=1e-6)
    np.testing.assert_allclose(multi.scores["id"]["in"], single.scores["id"]["in"], atol=1e-6)
    for task in TASKS4:  # per-batch seeding: the random corruptions and starts do not depend on the rank
        np.testing.assert_allclose(multi.scores["ood"]["a"][task], single.scores["ood"]["a"][task], atol=1e-6)
    assert multi.config["corruption_wins"] == single.config["corruption_wins"]  # summed over both ranks
    assert multi.table() == single.table()
