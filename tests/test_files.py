"""Tests of tutorseg.data.files: atomic writes and how paths are shown."""

from __future__ import annotations

import json

import pytest

from tutorseg.data.files import display_path, write_json_atomic, write_text_atomic


def test_atomic_writes_leave_only_the_finished_file(tmp_path):
    write_text_atomic(tmp_path / "notes.txt", "first")
    write_text_atomic(tmp_path / "notes.txt", "second", durable=True)
    write_json_atomic(tmp_path / "sub" / "data.json", {"a": 1})
    assert (tmp_path / "notes.txt").read_text() == "second"
    assert json.loads((tmp_path / "sub" / "data.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data.json", "notes.txt", "sub"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    write_json_atomic(tmp_path / "data.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "data.json", {"a": object()})  # not JSON: fails half-way through writing
    assert json.loads((tmp_path / "data.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


@pytest.mark.parametrize("path, shown", [
    ("/home/ada", "~"),
    ("/home/ada/runs/fold_0", "~/runs/fold_0"),
    ("/home/adams/runs", "/home/adams/runs"),  # shares the home folder's first letters, is not inside it
    ("/data/Task04", "/data/Task04"),
    (None, "-"),
])
def test_display_path_hides_the_home_folder(monkeypatch, path, shown):
    monkeypatch.setenv("HOME", "/home/ada")
    assert display_path(path) == shown


def test_display_path_with_the_root_as_home_keeps_paths(monkeypatch):
    monkeypatch.setenv("HOME", "/")
    assert display_path("/data/Task04") == "/data/Task04"


def test_atomic_folder_replaces_in_full_or_not_at_all(tmp_path):
    from tutorseg.data.files import atomic_folder

    target = tmp_path / "Dataset500_Mine"
    with atomic_folder(target) as staging:
        (staging / "dataset.json").write_text("{}")
    assert (target / "dataset.json").read_text() == "{}"
    with pytest.raises(RuntimeError), atomic_folder(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("the copy failed half-way")
    assert sorted(p.name for p in target.iterdir()) == ["dataset.json"]  # the old folder, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["Dataset500_Mine"]  # no staging folder left behind
