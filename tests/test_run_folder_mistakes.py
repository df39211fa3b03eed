"""A run folder damaged or misused by hand: one-line refusals (exit code 2), no lost data, no traceback."""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN

from mtdqn.cli import main
from mtdqn.errors import UserError
from mtdqn.runlog import load_checkpoint, save_checkpoint

TINY = TINY_TRAIN


def refused(args: list[str], capsys) -> str:
    """Run ``mtdqn args``; it must exit with code 2 and one line on stderr, which is returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A two-task run of 2 epochs (checkpoint at epoch 2, evaluations of epochs 0-2)."""
    root = tmp_path_factory.mktemp("runs")
    args = ["train", "--task", "CartPole-v1", "--task", "Acrobot-v1", "--epochs", "2", *TINY]
    assert main([*args, "--runs-dir", str(root), "--name", "good"]) == 0
    return root / "good"


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A fresh copy of the trained run, to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def test_overwrite_replaces_only_run_folders(tmp_path: Path, capsys) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine")
    args = ["train", "--task", "CartPole-v1", "--epochs", "0", *TINY, "--runs-dir", str(tmp_path)]
    err = refused([*args, "--name", "victim", "--overwrite"], capsys)
    assert "not an mtdqn run folder" in err
    assert (victim / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["..", ".", "a/b", "   ", "../escape"])
def test_name_must_be_one_folder_name(name: str, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    args = ["train", "--task", "CartPole-v1", "--epochs", "0", *TINY, "--runs-dir", str(runs), "--name", name]
    err = refused([*args, "--overwrite"], capsys)
    assert "is not a folder name" in err
    assert list(tmp_path.iterdir()) == [runs] and not any(runs.iterdir())


def test_runs_dir_that_is_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "afile").write_text("")
    args = ["train", "--task", "CartPole-v1", "--epochs", "0", *TINY, "--runs-dir", str(tmp_path / "afile")]
    assert "cannot create the run folder" in refused([*args, "--name", "x"], capsys)


@pytest.mark.parametrize("flag", ["--lr", "--optimizer-eps"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_learning_numbers_must_be_finite(flag: str, value: str, tmp_path: Path, capsys) -> None:
    args = ["train", "--task", "CartPole-v1", *TINY, "--runs-dir", str(tmp_path), flag, value]
    assert "finite" in refused(args, capsys)
    assert not any(tmp_path.iterdir())


def test_a_damaged_checkpoint_is_refused_by_its_digest(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"fingerprint": "f", "w": torch.arange(1000, dtype=torch.float32), "epoch": 3})
    assert torch.equal(load_checkpoint(path, "f")["w"], torch.arange(1000, dtype=torch.float32))
    # overwrite 4 bytes inside the tensor's record: torch.load does not check the zip's CRCs
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
    name_len, extra_len = struct.unpack("<HH", raw[record.header_offset + 26 : record.header_offset + 30])
    start = record.header_offset + 30 + name_len + extra_len
    raw[start + 400 : start + 404] = b"\xff\xff\xff\xff"
    path.write_bytes(raw)
    assert torch.load(path, weights_only=True)["epoch"] == 3  # loads without complaint...
    with pytest.raises(UserError, match="is damaged"):  # ...but not past the digest
        load_checkpoint(path, "f")


def test_a_damaged_checkpoint_stops_resume_and_evaluate(run: Path, capsys) -> None:
    raw = bytearray((run / "checkpoint.pt").read_bytes())
    with zipfile.ZipFile(run / "checkpoint.pt") as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
    middle = record.header_offset + 100 + record.file_size // 2
    raw[middle : middle + 64] = bytes(range(64))
    (run / "checkpoint.pt").write_bytes(raw)
    for args in (["train", "--resume", str(run), "--epochs", "3"], ["evaluate", str(run)]):
        assert "checkpoint" in refused(args, capsys)


def test_a_pickle_that_is_not_ours_is_refused_without_advice_to_unpickle_it(run: Path, capsys) -> None:
    torch.save({"format": 1, "thing": Path("x")}, run / "checkpoint.pt")  # an object, not a tensor
    err = refused(["evaluate", str(run)], capsys)
    assert "not written by mtdqn" in err and "weights_only" not in err


def test_missing_checkpoint_with_recorded_epochs(run: Path, capsys) -> None:
    (run / "checkpoint.pt").unlink()
    err = refused(["train", "--resume", str(run), "--epochs", "2"], capsys)
    assert "no checkpoint.pt" in err and "records epochs up to 2" in err
    assert (run / "metrics.csv").is_file()


@pytest.mark.parametrize("keep", [0, 1])  # lines of metrics.csv kept: nothing, the header only
def test_lost_evaluations_before_the_checkpoint(run: Path, keep: int, capsys) -> None:
    metrics = run / "metrics.csv"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:keep]))
    err = refused(["train", "--resume", str(run), "--epochs", "3"], capsys)
    assert "lacks the evaluations of epoch(s) 0, 1" in err


def test_garbled_metrics(run: Path, capsys) -> None:
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join([*lines[:2], "garbage,,,xx\n", *lines[3:]]))
    for args in (["plot", str(run)], ["train", "--resume", str(run), "--epochs", "3"]):
        assert "metrics.csv is corrupt (line 3" in refused(args, capsys)
    (run / "metrics.csv").write_text("".join(lines[1:]))  # no header
    assert "no column" in refused(["plot", str(run)], capsys)


def test_plot_without_evaluations(run: Path, capsys) -> None:
    metrics = run / "metrics.csv"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    assert "no evaluations yet" in refused(["plot", str(run)], capsys)


def test_resume_never_shortens_a_run(run: Path, capsys) -> None:
    before = (run / "config.json").read_bytes()
    err = refused(["train", "--resume", str(run), "--epochs", "1"], capsys)
    assert "--epochs 1 is below the 2 epochs" in err
    assert (run / "config.json").read_bytes() == before


def test_evaluate_a_file_instead_of_a_folder(run: Path, capsys) -> None:
    assert "is a file, not a run folder" in refused(["evaluate", str(run / "config.json")], capsys)


def test_best_shared_of_another_run_is_refused_as_a_transfer_source(
    run: Path, tmp_path: Path, capsys
) -> None:
    args = ["train", "--task", "CartPole-v1", "--task", "Acrobot-v1", "--epochs", "1", *TINY]
    assert main([*args, "--runs-dir", str(tmp_path), "--name", "other", "--seed", "7"]) == 0
    shutil.copy(tmp_path / "other" / "best_shared.pt", run / "best_shared.pt")
    transfer = ["transfer", "--from", str(run), "--task", "MountainCar-v0", "--epochs", "1", *TINY]
    err = refused([*transfer, "--runs-dir", str(tmp_path)], capsys)
    assert "was not written by the run in" in err


def test_experiment_name_must_be_one_folder_name(tmp_path: Path, capsys) -> None:
    args = [
        "experiment",
        "deramo-gym",
        "--seeds",
        "1",
        "--out",
        str(tmp_path / "x"),
        "--name",
        "../../outside",
    ]
    assert "is not a folder name" in refused(args, capsys)
    assert not any(tmp_path.iterdir())


def test_resume_refusal_names_the_flags_as_typed(run: Path, capsys) -> None:
    err = refused(["train", "--resume", str(run), "--task", "CartPole-v1", "--no-fire-reset"], capsys)
    assert "drop --task, --no-fire-reset " in err


def test_negatable_options_are_the_parsers_boolean_optional_flags() -> None:
    import argparse

    from mtdqn.cli import _NEGATABLE_OPTIONS, build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = commands.choices["train"]
    negatable = {a.dest for a in train._actions if isinstance(a, argparse.BooleanOptionalAction)}
    assert negatable == _NEGATABLE_OPTIONS


def test_a_run_stopped_before_its_first_checkpoint_is_pointed_to_resume(run: Path, capsys) -> None:
    """A run killed in its warm-up (config.json, no checkpoint): evaluate and analyze say to resume it."""
    for path in run.iterdir():
        if path.name != "config.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    advice = f"continue it with mtdqn train --resume {run}"
    assert advice in refused(["evaluate", str(run)], capsys)
    assert advice in refused(["analyze", str(run), "--method", "pca", "--steps", "20"], capsys)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # the advice works
    assert (run / "checkpoint.pt").is_file()
