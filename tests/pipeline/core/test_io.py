"""Atomic writes: whole files or nothing, old content kept when a write fails midway."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from affectflow.pipeline.core import io as core_io
from affectflow.pipeline.core.io import (
    atomic_dir, atomic_path, read_json, save_safetensors, to_jsonable, write_bytes, write_json, write_text,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_text_bytes_and_json_round_trip(tmp_path):
    write_text("é,b\n1,2\n", tmp_path / "sub" / "a.csv")
    assert (tmp_path / "sub" / "a.csv").read_bytes() == "é,b\n1,2\n".encode("utf-8")
    write_bytes(b"\x00\x01", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"

    @dataclass
    class Result:
        score: float
        where: Path

    write_json({"r": Result(float("nan"), Path("/x")), "a": np.arange(3), "f": np.float32(0.5), "t": (1, 2)},
               tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text()) == {
        "r": {"score": None, "where": "/x"}, "a": [0, 1, 2], "f": 0.5, "t": [1, 2]}
    assert _leftovers(tmp_path) == []


def test_to_jsonable_leaves_plain_values():
    assert to_jsonable({1: [1, "x", None, True]}) == {"1": [1, "x", None, True]}
    assert to_jsonable(np.int64(3)) == 3 and isinstance(to_jsonable(np.int64(3)), int)


def test_unserialisable_json_raises_naming_the_file_and_keeps_the_old_one(tmp_path):
    path = write_json({"ok": 1}, tmp_path / "c.json")
    with pytest.raises(ValueError, match="c.json.*JSON"):
        write_json({"bad": object()}, path)
    assert json.loads(path.read_text()) == {"ok": 1}
    assert write_json({"v": object()}, tmp_path / "d.json", default=lambda o: "obj").is_file()


def test_crash_mid_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = write_text("old content", tmp_path / "file.txt")

    def failing_fsync(descriptor):
        raise OSError("disk full")

    monkeypatch.setattr(core_io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_text("new content that never lands", path)
    monkeypatch.undo()
    assert path.read_text() == "old content"
    assert _leftovers(tmp_path) == []


def test_atomic_path_body_raising_keeps_old_file_and_removes_tmp(tmp_path):
    path = write_text("old", tmp_path / "table.csv")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_path(path) as tmp:
            tmp.write_text("half a ta")
            raise RuntimeError("writer died")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with atomic_path(tmp_path / "new.csv") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".new.csv.") and tmp.name.endswith(".tmp")
        tmp.write_text("a\n")
    assert (tmp_path / "new.csv").read_text() == "a\n"


def test_atomic_path_refuses_a_writer_that_wrote_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        with atomic_path(tmp_path / "x.bin"):
            pass
    assert not (tmp_path / "x.bin").exists()


def test_safetensors_torch_and_numpy(tmp_path):
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # non-contiguous
    path = save_safetensors({"w": weight}, tmp_path / "m.safetensors", metadata={"architecture": "mlp"})
    with safe_open(path, framework="pt") as handle:
        torch.testing.assert_close(handle.get_tensor("w"), weight)
        assert handle.metadata()["architecture"] == "mlp"
    save_safetensors({"v": np.ones((2,), np.float32)}, tmp_path / "n.safetensors")
    with safe_open(tmp_path / "n.safetensors", framework="numpy") as handle:
        np.testing.assert_array_equal(handle.get_tensor("v"), np.ones(2, np.float32))


def test_safetensors_crash_keeps_old_file(tmp_path, monkeypatch):
    path = save_safetensors({"w": torch.zeros(2)}, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def failing_replace(source, target):
        raise OSError("killed before rename")

    monkeypatch.setattr(core_io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="killed"):
        save_safetensors({"w": torch.ones(2)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_atomic_dir_swaps_whole_folders(tmp_path):
    final = tmp_path / "bundle"
    with atomic_dir(final) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as staging:
            (staging / "a.txt").write_text("second")
            raise RuntimeError("crash while writing the folder")
    assert (final / "a.txt").read_text() == "first"
    with atomic_dir(final) as staging:
        (staging / "b.txt").write_text("third")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_allow_nan_keeps_non_finite_values_for_internal_state(tmp_path):
    path = write_json({"loss": float("nan"), "best": [np.float64("inf")]}, tmp_path / "state.json", allow_nan=True)
    loaded = json.loads(path.read_text())
    assert np.isnan(loaded["loss"]) and loaded["best"] == [float("inf")]


def test_read_json_names_the_file_on_invalid_content(tmp_path):
    assert read_json(write_json({"a": [1]}, tmp_path / "ok.json")) == {"a": [1]}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        read_json(tmp_path / "bad.json")


@pytest.mark.parametrize("kind", ["symlink_to_dir", "dangling_symlink", "stale_old_symlink", "file"])
def test_atomic_dir_replaces_a_symlink_itself_never_its_target(tmp_path, kind):
    """Issue 16 minor: `train --out` whose `best` is a symlink failed forever (rmtree on a symlink).
    The link (or file) is replaced by the new folder; what it pointed at is left untouched."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me", encoding="utf-8")
    best = tmp_path / "out" / "best"
    best.parent.mkdir()
    if kind == "symlink_to_dir":
        best.symlink_to(elsewhere, target_is_directory=True)
    elif kind == "dangling_symlink":
        best.symlink_to(tmp_path / "nowhere")
    elif kind == "stale_old_symlink":  # what the failing run left behind
        best.with_name("best.old").symlink_to(elsewhere, target_is_directory=True)
    else:
        best.write_text("not a folder", encoding="utf-8")
    for round_ in range(2):  # and again: it must not fail "forever"
        with atomic_dir(best) as staging:
            (staging / "bundle.json").write_text(str(round_), encoding="utf-8")
        assert best.is_dir() and not best.is_symlink() and (best / "bundle.json").read_text() == str(round_)
    assert (elsewhere / "precious.txt").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in best.parent.iterdir()) == ["best"]
