"""The run folder (Google Drive on Colab) goes away mid-run and comes back: training goes on, nothing is lost.

No Drive mount exists here. The stand-in is the run folder's writes failing as a dropped FUSE mount fails
(``OSError: [Errno 107] Transport endpoint is not connected``), injected into the atomic file writer and into the
log's ``open`` for the epochs chosen, while the files themselves stay on the local disk.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from training_helpers import TINY, tiny_plan

from tutorseg.data import files
from tutorseg.data.problems import TutorsegError
from tutorseg.training import loop, resume, train_fold
from tutorseg.training.runs import checkpoint as ckpt
from tutorseg.training.runs import folder as run_folder


class DroppedMount:
    """Makes every write under ``folder`` fail with ENOTCONN while ``away`` is True."""

    def __init__(self, folder: Path, monkeypatch):
        self.folder, self.away, self.failures = folder, False, 0
        real_atomic_path, real_open = files.atomic_path, open

        def atomic_path(path, **kwargs):
            self._check(path)
            return real_atomic_path(path, **kwargs)

        def guarded_open(path, *args, **kwargs):
            self._check(path)
            return real_open(path, *args, **kwargs)

        for module in (files, ckpt, run_folder):
            monkeypatch.setattr(module, "atomic_path", atomic_path, raising=False)
        monkeypatch.setattr(run_folder, "open", guarded_open, raising=False)  # the log is appended there

    def _check(self, path) -> None:
        if self.away and Path(path).resolve().is_relative_to(self.folder.resolve()):
            self.failures += 1
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected", str(path))


def test_training_goes_on_while_the_run_folder_is_away_and_copies_back(sample_dir, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "drive" / "run"
    mount = DroppedMount(run_dir, monkeypatch)
    real_save_epoch = loop.save_epoch

    def save_epoch(run, improved):
        mount.away = run.epoch in (2, 3)  # the mount drops after epoch 2 and is back for epoch 4
        return real_save_epoch(run, improved)

    monkeypatch.setattr(loop, "save_epoch", save_epoch)
    record = train_fold(sample_dir, tiny_plan(sample_dir), fold=0, out_dir=run_dir, preprocessed_dir=tmp_path / "pre",
                        validate=False, **{**TINY, "epochs": 5})
    assert mount.failures > 0 and record.epochs == 5
    assert (run_dir / "checkpoint_final.pt").is_file()
    assert json.loads((run_dir / "history.json").read_text())["epoch"] == [0, 1, 2, 3, 4]
    assert [p.name for p in ckpt.epoch_checkpoints(run_dir)] == ["checkpoint_epoch_0005.pt", "checkpoint_epoch_0004.pt"]
    log = (run_dir / "log.txt").read_text()
    assert "cannot be written (Transport endpoint is not connected): training goes on" in log
    assert "is back: the files kept in" in log
    assert log.count("epoch 1 (") == 1 and "epoch 2 (" in log  # the lines logged while away were written later
    assert "tutorseg: the run folder" in capsys.readouterr().out  # said even under a progress bar
    assert not run_folder.fallback_folder(run_dir).exists()


def test_a_folder_still_away_at_the_end_says_where_everything_is_and_resume_brings_it_back(sample_dir, tmp_path,
                                                                                          monkeypatch):
    run_dir = tmp_path / "drive" / "run"
    mount = DroppedMount(run_dir, monkeypatch)
    monkeypatch.setattr(run_folder, "FINISH_TRIES", 2)
    monkeypatch.setattr(run_folder, "FINISH_WAIT_S", 0.0)
    real_save_epoch = loop.save_epoch

    def save_epoch(run, improved):
        mount.away = run.epoch >= 2  # gone for good (until the test brings it back)
        return real_save_epoch(run, improved)

    monkeypatch.setattr(loop, "save_epoch", save_epoch)
    with pytest.raises(TutorsegError, match="cannot be reached: nothing is lost.*tutorseg.resume"):
        train_fold(sample_dir, tiny_plan(sample_dir), fold=0, out_dir=run_dir, preprocessed_dir=tmp_path / "pre",
                   validate=False, **{**TINY, "epochs": 3})
    fallback = run_folder.fallback_folder(run_dir)
    assert (fallback / "checkpoint_final.pt").is_file() and not (run_dir / "checkpoint_final.pt").exists()
    assert "epoch 2 (" in (fallback / "log.txt").read_text()  # the log lines of the time away are kept too
    mount.away = False
    monkeypatch.setattr(loop, "save_epoch", real_save_epoch)
    record = resume(run_dir, progress=False)  # the mount is back: the held files come home first
    assert (run_dir / "checkpoint_final.pt").is_file() and record.epochs == 3
    log = (run_dir / "log.txt").read_text()
    assert "copied back what the last process kept locally" in log and "epoch 2 (" in log
    assert not fallback.exists()


def test_a_new_run_never_picks_up_what_an_earlier_run_in_its_folder_left(sample_dir, tmp_path):
    run_dir = tmp_path / "drive" / "run"
    left = run_folder.fallback_folder(run_dir)
    left.mkdir(parents=True, exist_ok=True)
    (left / "checkpoint_epoch_0009.pt").write_bytes(b"an earlier run's checkpoint")
    train_fold(sample_dir, tiny_plan(sample_dir), fold=0, out_dir=run_dir, preprocessed_dir=tmp_path / "pre",
               validate=False, **TINY)
    assert not left.exists()
    assert "removed what an earlier run" in (run_dir / "log.txt").read_text()
    assert [p.name for p in ckpt.epoch_checkpoints(run_dir)] == ["checkpoint_epoch_0002.pt", "checkpoint_epoch_0001.pt"]
