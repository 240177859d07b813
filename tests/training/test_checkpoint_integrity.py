"""Checkpoint integrity (payload checksum, unreadable files) and the out-dir rule."""
from __future__ import annotations

import os

import pytest
import torch

from atom_plugin.training.checkpoint import (
    FORMAT, load_checkpoint, payload_checksum, prepare_out_dir, rng_state, save_checkpoint,
)


def _state():
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(32, 64, generator=g))
    return {"format": FORMAT, "epoch": 2, "model": lin.state_dict(), "history": [{"loss": 0.25, "epoch": 1}],
            "config": {"q": 0.125, "milestones": [5, 7]}, "rng": [rng_state()]}, lin


def _flip_tensor_byte(path, tensor):
    raw = bytearray(path.read_bytes())
    at = raw.find(tensor.detach().numpy().tobytes()[:64])
    assert at > 0  # the tensor's storage is stored uncompressed in the zip
    raw[at + 17] ^= 0x01  # one bit of one float
    path.write_bytes(bytes(raw))


def test_round_trip_stores_and_strips_the_checksum(tmp_path):
    state, _ = _state()
    path = save_checkpoint(state, tmp_path / "last.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["checksum"].startswith("sha256:") and raw["checksum"] == payload_checksum(state)
    loaded = load_checkpoint(path)
    assert "checksum" not in loaded and loaded["epoch"] == 2 and loaded["history"] == state["history"]
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])


def test_checksum_is_sensitive_to_values_order_and_types():
    state, _ = _state()
    base = payload_checksum(state)
    assert payload_checksum(dict(state)) == base
    for change in ({"epoch": 3}, {"epoch": 2.0}, {"history": [{"loss": 0.25, "epoch": 2}]},
                   {"config": {"milestones": [5, 7], "q": 0.125}}):
        assert payload_checksum({**state, **change}) != base, change
    w = state["model"]["weight"].clone()
    w.view(-1)[100] = torch.nextafter(w.view(-1)[100], torch.tensor(1e9))
    assert payload_checksum({**state, "model": {**state["model"], "weight": w}}) != base
    assert payload_checksum({**state, "model": {**state["model"], "weight": w.double()}}) != base


def test_one_flipped_bit_in_a_tensor_is_refused(tmp_path):
    state, lin = _state()
    path = save_checkpoint(state, tmp_path / "last.pt")
    _flip_tensor_byte(path, lin.weight)
    # torch.load itself accepts the file: the zip CRC is not checked
    assert not torch.equal(torch.load(path, weights_only=True)["model"]["weight"], lin.weight.detach())
    with pytest.raises(ValueError, match=r"last\.pt is corrupt: its payload checksum does not match"):
        load_checkpoint(path)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    assert load_checkpoint(path, verify=False)["epoch"] == 2  # explicit opt-out


def test_checkpoint_without_checksum_still_loads(tmp_path):
    state, _ = _state()
    path = save_checkpoint(state, tmp_path / "old.pt", checksum=False)
    assert load_checkpoint(path)["epoch"] == 2


@pytest.mark.parametrize("content, match", [
    (b"", "is empty"),
    (b"\x00" * 1000, "cannot be read"),
    (os.urandom(4096), "cannot be read"),
    ("truncated", "cannot be read"),
])
def test_unreadable_files_name_the_path_and_the_fix(tmp_path, content, match):
    state, _ = _state()
    path = save_checkpoint(state, tmp_path / "last.pt")
    if content == "truncated":
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "fresh run" in str(err.value)


def test_missing_directory_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="is a directory"):
        load_checkpoint(tmp_path)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not an atom_plugin training checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_load_checkpoint_model_verifies_the_checksum(tmp_path):
    from atom_plugin.models import Normalize, SmallCNN, with_reject_head
    from atom_plugin.pretrained import load_checkpoint_model

    torch.manual_seed(0)
    model = with_reject_head(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3), 10)
    state = {"format": FORMAT, "model": model.state_dict(), "num_classes": 10, "num_reject": 1, "arch": "smallcnn"}
    path = save_checkpoint(state, tmp_path / "last.pt")
    rebuilt, k = load_checkpoint_model(str(path))
    assert k == 10 and torch.equal(rebuilt.model.fc.weight, model.model.fc.weight)
    _flip_tensor_byte(path, model.model.fc.weight)
    with pytest.raises(ValueError, match="payload checksum"):
        load_checkpoint_model(str(path))


# --------------------------------------------------------------------------- out-dir rule
def test_out_dir_that_is_a_file_or_under_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match=r"file\.txt is a file, not a directory"):
        prepare_out_dir(f)
    with pytest.raises(ValueError, match=r"is under the file .*file\.txt"):
        prepare_out_dir(f / "sub" / "run")
    (tmp_path / "run" / "last.pt").mkdir(parents=True)
    with pytest.raises(ValueError, match="directory named last.pt"):
        prepare_out_dir(tmp_path / "run")
    with pytest.raises(TypeError, match="`out_dir` must be a path"):
        prepare_out_dir(3)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_out_dir_unwritable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="cannot be written"):
            prepare_out_dir(ro / "run")
    finally:
        ro.chmod(0o700)


def test_used_out_dir_needs_resume_or_overwrite(tmp_path):
    out = prepare_out_dir(tmp_path / "run")
    assert out.is_dir()
    state, _ = _state()
    save_checkpoint(state, out / "last.pt")
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (out / "epoch_0001.pt").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"already holds a training run.*resume=True.*overwrite=True"):
        prepare_out_dir(out)
    assert prepare_out_dir(out, resume=True) == out and (out / "last.pt").is_file()
    assert prepare_out_dir(out, overwrite=True, main=False) == out and (out / "last.pt").is_file()  # checks only
    prepare_out_dir(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # only the run's files are deleted
    prepare_out_dir(out)  # now fresh
    # a log without a checkpoint (killed during epoch 1 of a run without last.pt) is a run too
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(ValueError, match="metrics.jsonl"):
        prepare_out_dir(out)


def test_leftover_tmp_files_are_removed_on_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    leftovers = [out / ".last.pt.abc123.tmp", out / ".epoch_0002.pt.zz.tmp"]
    for p in leftovers:
        p.write_bytes(b"partial")
    (out / "keep.tmp").write_bytes(b"not ours")
    prepare_out_dir(out)
    assert not any(p.exists() for p in leftovers) and (out / "keep.tmp").exists()


def test_save_into_a_file_path_fails_clearly(tmp_path):
    (tmp_path / "f").write_text("x")
    state, _ = _state()
    with pytest.raises(ValueError, match="is a file, not a directory"):
        save_checkpoint(state, tmp_path / "f" / "last.pt")
    (tmp_path / "d" / "last.pt").mkdir(parents=True)
    with pytest.raises(ValueError, match="it is a directory"):
        save_checkpoint(state, tmp_path / "d" / "last.pt")


def _cli(capsys, *args):
    from atom_plugin import cli

    code = cli.main(list(args))
    return code, capsys.readouterr().err


def test_cli_train_checks_out_before_any_work(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    code, err = _cli(capsys, "train", "--out", str(f), "--epochs", "1", "--quiet")
    assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1
    used = tmp_path / "used"
    used.mkdir()
    (used / "metrics.jsonl").write_text('{"epoch": 1}\n')
    code, err = _cli(capsys, "train", "--out", str(used), "--epochs", "1", "--quiet")
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    code, err = _cli(capsys, "train", "--out", str(used), "--resume", "--overwrite")
    assert code == 2 and "contradict" in err
    assert (used / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


def test_cli_train_help_and_docstring():
    import argparse

    from atom_plugin.commands import train as cmd

    parser = argparse.ArgumentParser(prog="atom-ood")
    text = " ".join(cmd.add_parser(parser.add_subparsers()).format_help().split())
    assert "%%" not in text and text.count("(default: 50/75/90% of --epochs)") == 1
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "--overwrite" in text and "(default: 8/255)" in text and "(default: 16)" in text
    assert "--N " not in cmd.__doc__ and "paper: 400000" in text


def test_mining_sizes_follow_the_data():
    from atom_plugin.commands.train import PAPER_MINED_SIZE, PAPER_POOL_SIZE, mining_sizes

    assert (PAPER_POOL_SIZE, PAPER_MINED_SIZE) == (400_000, 100_000)
    assert mining_sizes(5000) == (5000, 1250)  # the embedded benchmark
    assert mining_sizes(300_000) == (300_000, 75_000)
    assert mining_sizes(10**6) == (400_000, 100_000)  # the paper's values when the data allow them
    assert mining_sizes(5000, 2500, 1344) == (2500, 1344)


def test_cli_train_overwrite_replaces_a_finished_run(tmp_path, capsys):
    """A second fresh run into the same --out no longer appends to metrics.jsonl (epochs 1, 1)."""
    import json

    out = tmp_path / "run"
    args = ["train", "--method", "oe", "--width", "4", "--batch-size", "128", "--outlier-batch-size", "64",
            "--epochs", "1", "--quiet", "--out", str(out)]
    assert _cli(capsys, *args)[0] == 0
    first = load_checkpoint(out / "last.pt")["model"]
    (out / "notes.txt").write_text("mine")
    code, err = _cli(capsys, *args, "--seed", "1")
    assert code == 2 and "already holds a training run" in err
    assert torch.equal(load_checkpoint(out / "last.pt")["model"]["model.fc.weight"], first["model.fc.weight"])
    assert _cli(capsys, *args, "--seed", "1", "--overwrite")[0] == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1]
    assert not torch.equal(load_checkpoint(out / "last.pt")["model"]["model.fc.weight"], first["model.fc.weight"])
    assert (out / "notes.txt").read_text() == "mine"


def test_a_successful_save_removes_leftovers_of_killed_saves(tmp_path):
    stale = tmp_path / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"partial")
    other = tmp_path / ".epoch_0001.pt.abc.tmp"
    other.write_bytes(b"partial")
    state, _ = _state()
    save_checkpoint(state, tmp_path / "last.pt")
    assert not stale.exists() and other.exists()  # only the leftovers of this file
    assert sorted(p.name for p in tmp_path.iterdir()) == [".epoch_0001.pt.abc.tmp", "last.pt"]
