"""The bad-input matrix of issue 15: every bad or unusual input gets a one-sentence
``ValueError`` / ``TypeError`` / ``FileNotFoundError`` naming the argument (or file) and
the fix, never a traceback from deep inside and never a silently wrong result.

Each case is a function ``case(tmp_path)`` that must raise ``exc`` with a message
matching ``match``.  Cases owned by other parts of the package that are not fixed yet
are marked ``xfail(strict=False)`` (they show up as XPASS once fixed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from atom_plugin import _validation as V
from atom_plugin.models import Normalize, SmallCNN, with_reject_head

INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError)


def _kway(c=3, k=10):
    torch.manual_seed(0)
    return Normalize(SmallCNN(k, in_chans=c, width=4), [0.5] * c, [0.25] * c).eval()


def _kp1():
    return with_reject_head(_kway(), 10).eval()


def _x(*shape, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)


@dataclass
class Case:
    id: str
    run: Callable
    exc: type | tuple = INPUT_ERRORS
    match: str = ""
    owner: str | None = None  # not fixed in this part of the package yet -> xfail(strict=False)


# ---------------------------------------------------------------------- images (_validation)
def _bhwc(tmp):
    V.check_images(_x(2, 32, 32, 3), "x")


def _bhwc_with_model(tmp):
    V.check_images(_x(2, 32, 32, 3), "x", model=_kway())


def _one_channel_into_rgb_model(tmp):
    V.check_images(_x(2, 1, 32, 32), "x", model=_kway())


def _rgb_into_gray_model(tmp):
    V.check_images(_x(2, 3, 32, 32), "x", model=_kway(c=1))


def _float64_images(tmp):
    V.check_images(_x(2, 3, 32, 32, dtype=torch.float64), "x", model=_kway())


def _float32_into_float64_model(tmp):
    V.check_images(_x(2, 3, 32, 32), "x", model=_kway().double())


def _single_image(tmp):
    V.check_images(_x(3, 32, 32), "x")


def _normalized_images(tmp):
    V.check_images((_x(2, 3, 8, 8) - 0.5) / 0.25, "x")


def _normalized_with_attack_normalization(tmp):
    V.check_images((_x(2, 3, 8, 8) - 0.5) / 0.25, "images", range_hint=V.ATTACK_NORMALIZES_HINT)


def _uint8_images(tmp):
    V.check_images((_x(2, 3, 8, 8) * 255).to(torch.uint8), "x")


def _nan_images(tmp):
    x = _x(2, 3, 8, 8)
    x[1, 0, 0, 0] = float("nan")
    V.check_images(x, "x")


def _empty_batch(tmp):
    V.check_images(_x(0, 3, 8, 8), "x")


def _numpy_images(tmp):
    V.check_images(np.zeros((2, 3, 8, 8), np.float32), "x")


def _dataset_as_images(tmp):
    V.check_images(TensorDataset(_x(2, 3, 8, 8)), "x")


def _tensor_as_dataset(tmp):
    V.check_dataset(_x(4, 3, 8, 8), "id_data")


def _array_as_dataset(tmp):
    V.check_dataset(np.zeros((4, 3, 8, 8), np.float32), "ood_sets['svhn']", labels=False)


# ---------------------------------------------------------------------- models / detectors
def _ten_way_to_five(tmp):
    with_reject_head(_kway(), 5)


def _reject_head_on_lambda(tmp):
    with_reject_head(lambda z: z, 10)


def _reject_sum_guessing_r(tmp):
    from atom_plugin.detectors import RejectSum

    RejectSum(_kway(), num_classes=3)


def _reject_class_on_kway(tmp):
    from atom_plugin.detectors import RejectClass

    RejectClass(_kway())


def _double_normalize(tmp):
    Normalize(_kway(), [0.5] * 3, [0.25] * 3)


def _normalize_bad_std(tmp):
    Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.0, 0.1, 0.1])


def _normalize_mismatched_stats(tmp):
    Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.2] * 2)


def _smallcnn_zero_classes(tmp):
    SmallCNN(0)


def _timm_pretrained_download(tmp):
    from atom_plugin.pretrained import create_timm_model

    create_timm_model("resnet18", 10, pretrained=True)


def _timm_unknown_name(tmp):
    from atom_plugin.pretrained import create_timm_model

    create_timm_model("no_such_net", 10)


def _weights_random_file(tmp):
    from atom_plugin.pretrained import load_checkpoint_model

    p = tmp / "w.pt"
    p.write_bytes(os.urandom(2048))
    load_checkpoint_model(str(p))


def _weights_missing(tmp):
    from atom_plugin.pretrained import load_checkpoint_model

    load_checkpoint_model(str(tmp / "missing.pt"))


def _weights_code_pickle(tmp):
    from atom_plugin.pretrained import load_weights_only

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(tmp / "pwned"),))

    torch.save({"w": Evil()}, tmp / "evil.pt")
    try:
        load_weights_only(str(tmp / "evil.pt"))
    finally:
        assert not (tmp / "pwned").exists()


# ---------------------------------------------------------------------- checkpoints / out dir
def _saved(tmp):
    from atom_plugin.training.checkpoint import FORMAT, save_checkpoint

    lin = nn.Linear(32, 16)
    return save_checkpoint({"format": FORMAT, "model": lin.state_dict(), "epoch": 1}, tmp / "last.pt"), lin


def _flipped_byte(tmp):
    from atom_plugin.training.checkpoint import load_checkpoint

    path, lin = _saved(tmp)
    raw = bytearray(path.read_bytes())
    raw[raw.find(lin.weight.detach().numpy().tobytes()[:32]) + 5] ^= 0x10
    path.write_bytes(bytes(raw))
    load_checkpoint(path)


def _empty_checkpoint(tmp):
    from atom_plugin.training.checkpoint import load_checkpoint

    path, _ = _saved(tmp)
    path.write_bytes(b"")
    load_checkpoint(path)


def _truncated_checkpoint(tmp):
    from atom_plugin.training.checkpoint import load_checkpoint

    path, _ = _saved(tmp)
    path.write_bytes(path.read_bytes()[:300])
    load_checkpoint(path)


def _random_checkpoint(tmp):
    from atom_plugin.training.checkpoint import load_checkpoint

    path = tmp / "last.pt"
    path.write_bytes(os.urandom(5000))
    load_checkpoint(path)


def _missing_checkpoint(tmp):
    from atom_plugin.training.checkpoint import load_checkpoint

    load_checkpoint(tmp / "nothing.pt")


def _out_dir_is_file(tmp):
    from atom_plugin.training.checkpoint import prepare_out_dir

    (tmp / "f").write_text("x")
    prepare_out_dir(tmp / "f")


def _out_dir_under_file(tmp):
    from atom_plugin.training.checkpoint import prepare_out_dir

    (tmp / "f").write_text("x")
    prepare_out_dir(tmp / "f" / "run")


def _out_dir_holds_run(tmp):
    from atom_plugin.training.checkpoint import prepare_out_dir

    _saved(tmp)
    prepare_out_dir(tmp)


def _tiny_train_data():
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.rand(8, 3, 32, 32, generator=g), torch.arange(8) % 10)
    aux = TensorDataset(torch.rand(16, 3, 32, 32, generator=g), torch.full((16,), -1))
    return ds, aux


def _train_api_into_used_out_dir(tmp):
    from atom_plugin.training import TrainConfig, Trainer

    (tmp / "metrics.jsonl").write_text('{"epoch": 1}\n')
    _saved(tmp)
    ds, aux = _tiny_train_data()
    cfg = TrainConfig(method="oe", epochs=1, batch_size=8, outlier_batch_size=8, progress=False)
    Trainer(_kway(), ds, aux, cfg, out_dir=tmp)  # must refuse before the first epoch


def _train_api_out_dir_is_file(tmp):
    from atom_plugin.training import TrainConfig, Trainer

    (tmp / "f").write_text("x")
    ds, aux = _tiny_train_data()
    cfg = TrainConfig(method="oe", epochs=1, batch_size=8, outlier_batch_size=8, progress=False)
    Trainer(_kway(), ds, aux, cfg, out_dir=tmp / "f")


def _train_bad_q(tmp):
    from atom_plugin.training import TrainConfig

    TrainConfig(q=0.9, pool_size=100, mined_size=50)


def _train_one_channel_data(tmp):
    from atom_plugin.training import TrainConfig, Trainer

    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.rand(8, 1, 32, 32, generator=g), torch.arange(8) % 10)
    _, aux = _tiny_train_data()
    Trainer(_kway(), ds, aux, TrainConfig(method="oe", epochs=1, progress=False))


# ---------------------------------------------------------------------- data
def _corrupt_png(tmp):
    from atom_plugin.data.folder import ImageFolderDataset

    (tmp / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ImageFolderDataset(tmp)[0]


def _object_npy(tmp):
    from atom_plugin.data.arrays import load_npy_images

    np.save(tmp / "o.npy", np.array([object()], dtype=object), allow_pickle=True)
    load_npy_images(str(tmp / "o.npy"))


def _unknown_dataset(tmp):
    from atom_plugin.data import load_dataset

    load_dataset("imagenet22k", str(tmp))


def _missing_cifar(tmp):
    from atom_plugin.data import load_dataset

    load_dataset("cifar10", str(tmp / "nowhere"))


# ---------------------------------------------------------------------- distributed
def _bad_timeout_env(tmp):
    from atom_plugin import distributed

    os.environ[distributed.TIMEOUT_ENV] = "soon"
    try:
        distributed.collective_timeout()
    finally:
        del os.environ[distributed.TIMEOUT_ENV]


def _negative_timeout(tmp):
    from atom_plugin import distributed

    distributed.collective_timeout(-1)


# ---------------------------------------------------------------------- other owners (xfail until fixed)
EVAL = "owned by evaluation/attacks work"


def _detector_one_channel(tmp):
    from atom_plugin.detectors import MSP

    MSP(_kway()).score(_x(2, 1, 32, 32))


def _detector_float64(tmp):
    from atom_plugin.detectors import MSP

    MSP(_kway()).score(_x(2, 3, 32, 32, dtype=torch.float64))


def _detector_bhwc():
    from atom_plugin.detectors import Energy

    Energy(_kway()).score(_x(2, 32, 32, 3))


def _attack_one_channel(tmp):
    from atom_plugin.attacks import OODPGD

    OODPGD(_kp1(), steps=1)(_x(2, 1, 32, 32))


def _evaluate_labels_out_of_range(tmp):
    from atom_plugin import evaluate
    from atom_plugin.detectors import MSP

    idd = TensorDataset(_x(4, 3, 32, 32), torch.tensor([0, 1, 50, 2]))
    evaluate(MSP(_kway()), idd, {"o": TensorDataset(_x(4, 3, 32, 32))}, tasks=("natural",), progress=False)


def _evaluate_raw_tensor(tmp):
    from atom_plugin import evaluate
    from atom_plugin.detectors import MSP

    evaluate(MSP(_kway()), _x(4, 3, 32, 32), {"o": _x(4, 3, 32, 32)})


def _evaluate_cuda_without_cuda(tmp):
    from atom_plugin import evaluate
    from atom_plugin.detectors import MSP

    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    idd = TensorDataset(_x(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    evaluate(MSP(_kway()), idd, {"o": TensorDataset(_x(4, 3, 32, 32))}, device="cuda", progress=False)


def _mahalanobis_fit_raw_tensor(tmp):
    from atom_plugin.detectors import Mahalanobis

    Mahalanobis(_kway()).fit(_x(4, 3, 32, 32))


def _mahalanobis_fit_later_batch_out_of_range(tmp):
    from torch.utils.data import DataLoader

    from atom_plugin.detectors import Mahalanobis

    x = _x(8, 3, 32, 32)
    x[4:] *= 255
    Mahalanobis(_kway()).fit(DataLoader(TensorDataset(x, torch.arange(8) % 10), batch_size=4))


def _multiattack_without_labels(tmp):
    import torchattacks

    from atom_plugin.attacks import OODPGD
    from atom_plugin.detectors import RejectClass

    det = RejectClass(_kp1())
    torchattacks.MultiAttack([OODPGD(det, steps=1), OODPGD(det, steps=1)])(_x(2, 3, 32, 32))


def _stock_pgd_on_detector(tmp):
    import torchattacks

    from atom_plugin.detectors import RejectClass

    torchattacks.PGD(RejectClass(_kp1()), steps=1)(_x(2, 3, 32, 32), torch.tensor([0, 1]))


def _attack_save_on_ood_set(tmp):
    from torch.utils.data import DataLoader

    from atom_plugin.attacks import OODPGD
    from atom_plugin.detectors import RejectClass

    loader = DataLoader(TensorDataset(_x(4, 3, 32, 32), torch.full((4,), -1)), batch_size=2)
    OODPGD(RejectClass(_kp1()), steps=1).save(loader, save_path=str(tmp / "adv.pt"), verbose=True)


def _cli_device_bogus(tmp):
    from atom_plugin import cli

    code = cli.main(["train", "--out", str(tmp / "run"), "--device", "bogus", "--epochs", "1", "--quiet",
                     "--pool-size", "64", "--mined-size", "32"])
    if code == 2:
        raise ValueError("exit code 2")


CASES = [
    Case("images-BHWC", _bhwc, ValueError, r"permute\(0, 3, 1, 2\)"),
    Case("images-BHWC-model", _bhwc_with_model, ValueError, r"permute\(0, 3, 1, 2\)"),
    Case("images-1ch-into-RGB-model", _one_channel_into_rgb_model, ValueError, "must have 3 channels"),
    Case("images-RGB-into-gray-model", _rgb_into_gray_model, ValueError, "must have 1 channels"),
    Case("images-float64", _float64_images, TypeError, r"float64 .*x\.float\(\)"),
    Case("images-float32-into-float64-model", _float32_into_float64_model, TypeError, "torch.float64"),
    Case("images-rank3", _single_image, ValueError, "unsqueeze.*TensorDataset"),
    Case("images-normalized", _normalized_images, ValueError, "before normalization"),
    Case("images-normalized-attack-normalizes", _normalized_with_attack_normalization, ValueError,
         r"^(?!.*unnormalized).*set_normalization_used"),
    Case("images-uint8", _uint8_images, TypeError, "255"),
    Case("images-nan", _nan_images, ValueError, "NaN"),
    Case("images-empty", _empty_batch, ValueError, "empty batch"),
    Case("images-numpy", _numpy_images, TypeError, "torch.Tensor"),
    Case("images-dataset", _dataset_as_images, TypeError, "iterate it"),
    Case("dataset-raw-tensor", _tensor_as_dataset, TypeError, r"TensorDataset\(x, y\)"),
    Case("dataset-raw-array", _array_as_dataset, TypeError, r"TensorDataset\(x\)"),
    Case("reject-head-10-to-5", _ten_way_to_five, ValueError, "replace_head=True"),
    Case("reject-head-not-module", _reject_head_on_lambda, TypeError, "`model`"),
    Case("reject-sum-guessed-R", _reject_sum_guessing_r, ValueError, "num_reject=7"),
    Case("reject-class-on-kway", _reject_class_on_kway, ValueError, "with_reject_head"),
    Case("double-normalize", _double_normalize, ValueError, "normalize twice"),
    Case("normalize-zero-std", _normalize_bad_std, ValueError, "positive"),
    Case("normalize-mismatched-stats", _normalize_mismatched_stats, ValueError, "same length"),
    Case("smallcnn-zero-classes", _smallcnn_zero_classes, ValueError, "num_classes"),
    Case("timm-pretrained-download", _timm_pretrained_download, ValueError, "download"),
    Case("timm-unknown-name", _timm_unknown_name, ValueError, "timm.list_models"),
    Case("weights-random", _weights_random_file, ValueError, r"w\.pt"),
    Case("weights-missing", _weights_missing, FileNotFoundError, "missing.pt"),
    Case("weights-code-pickle", _weights_code_pickle, ValueError, "weights-only"),
    Case("checkpoint-flipped-byte", _flipped_byte, ValueError, "payload checksum"),
    Case("checkpoint-empty", _empty_checkpoint, ValueError, r"last\.pt is empty"),
    Case("checkpoint-truncated", _truncated_checkpoint, ValueError, r"last\.pt cannot be read"),
    Case("checkpoint-random", _random_checkpoint, ValueError, r"last\.pt cannot be read"),
    Case("checkpoint-missing", _missing_checkpoint, FileNotFoundError, "nothing.pt"),
    Case("out-dir-is-file", _out_dir_is_file, ValueError, "is a file"),
    Case("out-dir-under-file", _out_dir_under_file, ValueError, "under the file"),
    Case("out-dir-holds-run", _out_dir_holds_run, ValueError, "overwrite=True"),
    Case("train-bad-q", _train_bad_q, ValueError, "`q`"),
    Case("train-api-used-out-dir", _train_api_into_used_out_dir, ValueError, "already holds a training run"),
    Case("train-api-out-dir-is-file", _train_api_out_dir_is_file, ValueError, "is a file"),
    Case("train-1ch-data-into-RGB-model", _train_one_channel_data, ValueError, "channels"),
    Case("data-corrupt-png", _corrupt_png, ValueError, r"bad\.png"),
    Case("data-object-npy", _object_npy, ValueError, r"o\.npy holds an object-dtype array"),
    Case("data-unknown-kind", _unknown_dataset, ValueError, "imagenet22k"),
    Case("data-missing-cifar", _missing_cifar, FileNotFoundError, "never downloads"),
    Case("dist-timeout-env", _bad_timeout_env, ValueError, "ATOM_PLUGIN_DIST_TIMEOUT"),
    Case("dist-timeout-negative", _negative_timeout, ValueError, "timeout_s"),
    Case("detector-1ch", _detector_one_channel, ValueError, "3-channel images"),
    Case("detector-BHWC", lambda tmp: _detector_bhwc(), ValueError, r"permute\(0, 3, 1, 2\)"),
    Case("detector-float64", _detector_float64, TypeError, r"x\.float\(\)"),
    Case("attack-1ch", _attack_one_channel, ValueError, "3-channel images"),
    Case("model-forward-1ch", lambda tmp: _kway()(_x(2, 1, 32, 32)), ValueError, r"x\.expand\(-1, 3, -1, -1\)"),
    Case("evaluate-label-50", _evaluate_labels_out_of_range, ValueError, "label"),
    Case("evaluate-raw-tensor", _evaluate_raw_tensor, TypeError, "TensorDataset"),
    Case("evaluate-cuda-without-cuda", _evaluate_cuda_without_cuda, ValueError, "CUDA"),
    Case("mahalanobis-fit-raw-tensor", _mahalanobis_fit_raw_tensor, INPUT_ERRORS, r"^(?!.*unsqueeze).*TensorDataset"),
    Case("mahalanobis-fit-later-batch-255", _mahalanobis_fit_later_batch_out_of_range, ValueError, r"\[0, 1\]"),
    Case("torchattacks-multiattack-no-labels", _multiattack_without_labels, INPUT_ERRORS, "OODMultiAttack"),
    Case("cli-device-bogus", _cli_device_bogus, ValueError, "exit code 2"),
    Case("torchattacks-stock-pgd-on-detector", _stock_pgd_on_detector, INPUT_ERRORS, "OODPGD"),
    Case("torchattacks-save-on-ood-set", _attack_save_on_ood_set, INPUT_ERRORS, "OOD"),
]


def _params():
    for c in CASES:
        marks = [pytest.mark.xfail(strict=False, reason=c.owner)] if c.owner else []
        yield pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", _params())
def test_bad_input_gets_a_clear_error(case, tmp_path):
    with pytest.raises(case.exc) as err:
        case.run(tmp_path)
    msg = str(err.value)
    assert msg and "Traceback" not in msg
    assert len(msg) < 600, msg  # one sentence, not a dump
    if case.match:
        import re

        assert re.search(case.match, msg), msg
