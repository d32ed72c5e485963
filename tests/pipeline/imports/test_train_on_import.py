"""`affectflow import-features` then `affectflow train` / `evaluate` on the imported stores, unchanged."""

from __future__ import annotations

import json

from affectflow.pipeline.cli.main import main
from affectflow.pipeline.train.checkpoint import read_bundle_info

from .conftest import write_declare_lab_tree


def test_cli_import_then_train_and_evaluate_a_tiny_model(tmp_path, capsys):
    write_declare_lab_tree(tmp_path / "mosi")
    out = tmp_path / "prepared"
    assert main(["import-features", "--format", "declare-lab-csv", "--root", str(tmp_path / "mosi"),
                 "--labels", str(tmp_path / "mosi" / "label.csv"), "--out", str(out), "--valid-fraction", "0.3"]) == 0
    assert "imported 16 segments" in capsys.readouterr().out
    manifest, features = out / "manifest.parquet", out / "features"
    assert main(["train", "--manifest", str(manifest), "--features", str(features), "--model", "late_fusion",
                 "--tiny", "--epochs", "1", "--batch-size", "4", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    info = read_bundle_info(tmp_path / "run" / "best")
    assert info.class_names == ("negative", "positive")
    assert {m: spec.name for m, spec in info.extractor_specs.items()} == {
        "a": "imported:declare-lab-csv:audio", "t": "imported:declare-lab-csv:text", "v": "imported:declare-lab-csv:vision"}
    assert "sha256" in info.extractor_specs["t"].config
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--manifest", str(manifest), "--features",
                 str(features), "--no-progress", "--out", str(tmp_path / "report")]) == 0
    assert "atv" in json.loads((tmp_path / "report" / "report.json").read_text())["models"]["late_fusion"]["fixed"]
    capsys.readouterr()
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "pending.wav").write_bytes(b"")  # one clip to label: a run with nothing to do loads no checkpoint
    assert main(["label", "--videos", str(videos), "--checkpoint", str(tmp_path / "run" / "best"), "--out",
                 str(tmp_path / "labels.csv"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "trained on imported features" in error and "cannot label raw media" in error
    assert "imported:declare-lab-csv" in error and "UnknownNameError" not in error


def test_cli_refuses_a_malicious_pickle_with_exit_code_2(tmp_path, capsys):
    import os
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": Payload()}))
    assert main(["import-features", "--format", "mmsa-pickle", "--root", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "evil.pkl: refusing to unpickle the global" in capsys.readouterr().err and not marker.exists()
