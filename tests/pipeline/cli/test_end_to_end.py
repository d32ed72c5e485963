"""clips -> manifest -> affectflow extract -> affectflow train -> label with the bundle (CPU, tiny)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from affectflow.pipeline.core.manifest import write_manifest
from factories.media import make_video

REPO_ROOT = Path(__file__).resolve().parents[3]


def _affectflow(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "affectflow.pipeline.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT)


def test_clips_to_features_to_training_to_labels(tmp_path, media):
    clips = tmp_path / "clips"
    clips.mkdir()
    rows = []
    sentences = {"joy": "I am so happy and delighted, what a wonderful day.",
                 "anger": "I am furious, this is outrageous and I hate it."}
    for index in range(8):
        emotion = "joy" if index % 2 == 0 else "anger"
        path = make_video(clips / f"clip{index}.mp4", seconds=1.0, face=index % 4 != 3, text=sentences[emotion])
        split = "train" if index < 4 else ("valid" if index < 6 else "test")
        rows.append({"segment_id": f"clip{index}", "media_path": str(path), "start": 0.0, "end": None,
                     "text": sentences[emotion], "emotion": emotion, "split": split})
    manifest = write_manifest(pd.DataFrame(rows), tmp_path / "manifest.csv")

    features = tmp_path / "features"
    extract = _affectflow("extract", "--manifest", str(manifest), "--out", str(features), "--audio", "logmel",
                          "--text", "minilm", "--vision", "fer", "--device", "cpu", "--no-progress")
    assert extract.returncode == 0, extract.stderr[-3000:]

    run_dir = tmp_path / "run"
    train = _affectflow("train", "--manifest", str(manifest), "--features", str(features), "--model", "early_fusion",
                        "--tiny", "--task", "classification", "--label-column", "emotion", "--epochs", "2",
                        "--out", str(run_dir), "--device", "cpu", "--no-progress")
    assert train.returncode == 0, train.stderr[-3000:]
    bundle = run_dir / "best"
    assert (bundle / "model.safetensors").is_file() and (bundle / "bundle.json").is_file()

    out = tmp_path / "labels.csv"
    shutil.copy(media["zero_bytes"], clips / "broken.mp4")
    label = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "run_pipeline.py"), "--videos", str(clips),
                            "--checkpoint", str(bundle), "--out", str(out), "--device", "cpu", "--no-asr", "--quiet"],
                           capture_output=True, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert label.returncode == 0, label.stderr[-3000:]
    table = pd.read_csv(out)
    assert len(table) == 9
    good = table[table["error"].isna()]
    assert len(good) == 8 and set(good["label"]) <= {"anger", "joy"}
    np.testing.assert_allclose(good[["prob_anger", "prob_joy"]].sum(axis=1), 1.0, atol=1e-4)
    assert "MediaError" in table.loc[table["clip"] == "broken.mp4", "error"].iloc[0]
    # Without ASR and sidecars the text modality is missing at labelling time; faces decide has_vision.
    assert not table.loc[table["clip"] == "clip3.mp4", "has_vision"].iloc[0]
