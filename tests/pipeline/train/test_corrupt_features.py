"""Issue 16 D5: training on a damaged stored feature file fails with one line naming the segment and file."""

from __future__ import annotations

import pytest

from affectflow.pipeline.cli.main import main
from factories.features import make_feature_corpus


@pytest.mark.parametrize("damage", ["truncate", "empty", "nan_tail"])
@pytest.mark.parametrize("frame_level", [False, True], ids=["utterance", "frames"])
def test_train_names_the_damaged_segment_and_file_and_exits_2(tmp_path, capsys, damage, frame_level):
    # nan_tail damages only the frame values (the file's last tensor): utterance-level training must refuse it too
    corpus = make_feature_corpus(tmp_path / "corpus", split_sizes={"train": 8, "valid": 4, "test": 4}, max_frames=3,
                                 missing_rate=0.0, seed=5)
    path = sorted((corpus.stores["a"] / "segments").glob("*.safetensors"))[0]
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:-5], "empty": b"", "nan_tail": data[:-8] + b"\xff" * 8}[damage])
    code = main(["train", "--manifest", str(corpus.manifest), "--features", str(corpus.features), "--model",
                 "late_fusion", "--tiny", "--epochs", "1", "--batch-size", "8", "--no-progress",
                 "--out", str(tmp_path / "run"), *(["--frame-level"] if frame_level else [])])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and path.stem in lines[0], err
