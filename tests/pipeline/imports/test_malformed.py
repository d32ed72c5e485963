"""`affectflow import-features` on malformed input (the 2026-12-06 adversarial probe): every case is refused
with exit code 2 and one stderr line naming the file (and the row, column or key), and nothing is written."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectflow.extractors.store import FeatureStore
from affectflow.pipeline.cli.main import main
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.imports import import_features

from .conftest import write_declare_lab_tree, write_mmsa_pickle, write_npy_folder
from .test_npy_folder import SOURCES


# --- npy-folder -------------------------------------------------------------------------------------------------

def _npy(tmp_path: Path, change) -> tuple[list[str], Path]:
    """The conftest npy-folder layout with `change(audio_folder)` applied; (CLI arguments, audio folder)."""
    root, labels, _ = write_npy_folder(tmp_path)
    folder = root / "wavlm-UTT"
    change(folder)
    args = ["--format", "npy-folder", "--root", str(root), "--labels", str(labels), "--source", *SOURCES]
    return args, folder


def _first_file(folder: Path) -> Path:
    return sorted(folder.glob("*.npy"))[0]


NPY_CASES = {
    "zero-byte file": (lambda f: (f / "dia1_utt0.npy").write_bytes(b""), ["dia1_utt0.npy", "empty"]),
    "0-d array first in its folder": (lambda f: np.save(_first_file(f), np.float32(1.0)),
                                      ["dia%204%2Fx.npy", "0-d"]),
    "structured dtype": (lambda f: np.save(f / "dia2_utt0.npy", np.zeros(4, [("a", "f4")])),
                         ["dia2_utt0.npy", "structured"]),
    "complex dtype": (lambda f: np.save(f / "dia2_utt1.npy", np.ones(4, np.complex64) * 1j),
                      ["dia2_utt1.npy", "complex"]),
    "string dtype": (lambda f: np.save(f / "dia3_utt0.npy", np.array(["1.5", "2", "3", "4"])),
                     ["dia3_utt0.npy", "str"]),
    "a folder named like a labelled .npy": (
        lambda f: ((f / "dia1_utt1.npy").unlink(), (f / "dia1_utt1.npy").mkdir()), ["dia1_utt1.npy", "folder"]),
    "a folder named like an unlabelled .npy": (lambda f: (f / "x.npy").mkdir(), ["x.npy", "folder"]),
    "a missing.txt that is a folder": (lambda f: (f.parent / "manet-UTT" / "missing.txt").unlink()
                                       or (f.parent / "manet-UTT" / "missing.txt").mkdir(), ["missing.txt", "not a file"]),
    "a labels CSV that is no CSV": (lambda f: (f.parent.parent / "labels.csv").write_bytes(bytes(range(256)) * 4),
                                    ["labels.csv", "not a readable CSV"]),
    "an empty array first in its folder": (lambda f: np.save(_first_file(f), np.zeros((0,), np.float32)),
                                           ["dia%204%2Fx.npy", "width 0"]),
}


# --- declare-lab-csv --------------------------------------------------------------------------------------------

def _declare_lab(tmp_path: Path, change) -> list[str]:
    root = tmp_path / "mosi"
    write_declare_lab_tree(root)
    change(root)
    return ["--format", "declare-lab-csv", "--root", str(root), "--labels", str(root / "label.csv")]


def _only_label_column(root: Path) -> None:
    for split in ("train", "test"):
        path = root / f"audio_{split}0.csv"
        table = pd.read_csv(path, header=None)
        table.iloc[:, -1:].to_csv(path, header=False, index=False)


def _bad_label_cell(root: Path) -> None:
    table = pd.read_csv(root / "label.csv", dtype=str)
    table.loc[2, "label"] = "n/a?"
    table.to_csv(root / "label.csv", index=False)


DECLARE_LAB_CASES = {
    "one-column transcripts.csv": (lambda r: (r / "transcripts.csv").write_text("vidA_1\nvidA_2\n"),
                                   ["transcripts.csv", "2 columns"]),
    "empty transcripts.csv": (lambda r: (r / "transcripts.csv").write_bytes(b""), ["transcripts.csv", "empty"]),
    "feature tables holding only the label column": (_only_label_column, ["audio_train0.csv", "no feature column"]),
    "a non-numeric cell in label.csv": (_bad_label_cell, ["label.csv:4", "'label'", "'n/a?'"]),
}


# --- mmsa-pickle ------------------------------------------------------------------------------------------------

def _mmsa(tmp_path: Path, change) -> list[str]:
    path = tmp_path / "aligned_5.pkl"
    data = write_mmsa_pickle(path)
    change(data["train"])
    path.write_bytes(pickle.dumps(data, protocol=4))
    return ["--format", "mmsa-pickle", "--root", str(path)]


def _ragged(part: dict) -> None:
    part["audio"] = np.array([np.zeros((6 - i % 2, 4), np.float32) for i in range(len(part["id"]))], dtype=object)


def _set(key: str, value):
    def change(part: dict) -> None:
        part[key] = value(part) if callable(value) else value
    return change


MMSA_CASES = {
    "fewer regression_labels than ids": (_set("regression_labels", lambda p: p["regression_labels"][:-1]),
                                         ["aligned_5.pkl [train]", "'regression_labels'", "5", "6 ids"]),
    "more raw_text than ids": (_set("raw_text", lambda p: np.append(p["raw_text"], "extra")),
                               ["aligned_5.pkl [train]", "'raw_text'", "7", "6 ids"]),
    "audio_lengths of another length": (_set("audio_lengths", lambda p: p["audio_lengths"][:3]),
                                        ["aligned_5.pkl [train]", "'audio_lengths'", "3", "6 ids"]),
    "string audio_lengths": (_set("audio_lengths", lambda p: [str(n) for n in p["audio_lengths"]]),
                             ["aligned_5.pkl [train]", "'audio_lengths'", "whole numbers"]),
    "a ragged object array": (_ragged, ["aligned_5.pkl [train]", "'audio'", "ragged"]),
    "a string object array": (_set("audio", lambda p: p["audio"].astype(str).astype(object)),
                              ["aligned_5.pkl [train]", "'audio'", "str"]),
    "a complex feature array": (_set("vision", lambda p: p["vision"] * (1 + 1j)),
                                ["aligned_5.pkl [train]", "'vision'", "complex"]),
    "an object array holding None": (_set("audio", np.array(None)), ["aligned_5.pkl [train]", "'audio'", "NoneType"]),
    "text_bert token ids for other ids": (_set("text_bert", lambda p: p["text_bert"][:2]),
                                          ["aligned_5.pkl [train]", "'text_bert' has 2 entries", "6 ids"]),
    "fewer ids than arrays": (_set("id", lambda p: p["id"][:-1]), ["aligned_5.pkl [train]", "5 ids"]),
}


# --- pickles that ask for memory --------------------------------------------------------------------------------

GLOBAL_BYTEARRAY = b"\x80\x02c__builtin__\nbytearray\n"
PICKLE_CASES = {
    "bytearray(2**30)": (GLOBAL_BYTEARRAY + b"J\x00\x00\x00\x40\x85R.", ["bytearray", "1073741824 bytes"]),
    "bytearray(2**44)": (GLOBAL_BYTEARRAY + b"\x8a\x06\x00\x00\x00\x00\x00\x10\x85R.", ["bytearray", "bytes"]),
    "BINBYTES8 longer than the file": (b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"xx.", ["3 remain"]),
    "BYTEARRAY8 longer than the file": (b"\x80\x05\x96" + (2**33).to_bytes(8, "little") + b"xx.", ["3 remain"]),
}


def _pickle(tmp_path: Path, payload: bytes) -> list[str]:
    path = tmp_path / "aligned_5.pkl"
    path.write_bytes(payload)
    return ["--format", "mmsa-pickle", "--root", str(path)]


def _cases():
    for name, (change, expected) in NPY_CASES.items():
        yield pytest.param(lambda tmp, c=change: _npy(tmp, c)[0], expected, id=f"npy: {name}")
    for name, (change, expected) in DECLARE_LAB_CASES.items():
        yield pytest.param(lambda tmp, c=change: _declare_lab(tmp, c), expected, id=f"declare-lab: {name}")
    for name, (change, expected) in MMSA_CASES.items():
        yield pytest.param(lambda tmp, c=change: _mmsa(tmp, c), expected, id=f"mmsa: {name}")
    for name, (payload, expected) in PICKLE_CASES.items():
        yield pytest.param(lambda tmp, p=payload: _pickle(tmp, p), ["aligned_5.pkl", *expected], id=f"pickle: {name}")


@pytest.mark.parametrize("build, expected", list(_cases()))
def test_malformed_input_is_refused_with_one_line_naming_it(build, expected, tmp_path, capsys):
    args = build(tmp_path)
    out = tmp_path / "out"
    code = main(["import-features", *args, "--out", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == 2, error
    assert len(error.splitlines()) == 1 and error.startswith("affectflow import-features: error: ")
    for part in expected:
        assert part in error, (part, error)
    assert not out.exists()  # refused before anything is written


def test_latin1_transcripts_are_read_like_the_label_files_and_named_in_a_note(tmp_path):
    root = tmp_path / "mosi"
    write_declare_lab_tree(root)
    path = root / "transcripts.csv"
    path.write_bytes(path.read_bytes().replace(b"SAID vidA_2", "SAID caf\xe9".encode("latin-1")))
    summary = import_features("declare-lab-csv", root, tmp_path / "out")
    table = read_manifest(summary.manifest).set_index("segment_id")
    assert table.loc["vidA_2", "text"] == "SAID caf\xe9"
    assert any("transcripts.csv: 1 bytes were not UTF-8 and were read as cp1252" in note for note in summary.notes)


def test_a_latin1_missing_list_is_read_like_the_label_files_and_named_in_a_note(npy_folder, tmp_path):
    root, labels, _ = npy_folder
    (root / "manet-UTT" / "missing.txt").write_bytes("dia3_utt0\ncaf\xe9_1\n".encode("latin-1"))
    summary = import_features("npy-folder", root, tmp_path / "out", labels=labels, sources=SOURCES)
    assert FeatureStore.open(summary.stores["v"]).read("dia3_utt0").is_missing
    assert any("missing.txt" in note and "cp1252" in note for note in summary.notes)
