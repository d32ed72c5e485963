"""Issue 16 D1 / D8: a checkpoint bundle is data. It never runs code, and an unusable one is exit 2, one line."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from affectflow.extractors.base import extractor_class, extractor_from_spec
from affectflow.extractors.store import FeatureStore
from affectflow.fusion.contract import TaskSpec
from affectflow.fusion.registry import create_fusion
from affectflow.pipeline.cli.main import main
from factories.features import make_feature_corpus, synthetic_spec
from affectflow.pipeline.train.checkpoint import load_bundle, save_bundle

TASK = TaskSpec("classification", {"a": 6, "t": 5, "v": 4}, ("angry", "happy", "sad"))
EVIL_CODE = """from pathlib import Path
Path({marker!r}).write_text("code from a model folder ran")
from transformers import PretrainedConfig
class EvilConfig(PretrainedConfig):
    model_type = "evil"
"""


def _hostile_model_folder(root: Path, marker: Path) -> Path:
    """A folder whose config.json `auto_map` points at .py files that write `marker` when imported."""
    folder = root / "evil_model"
    folder.mkdir()
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel", "AutoTokenizer": ["evil.EvilTok", None]}
    (folder / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.EvilTok", None]}}))
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    return folder


def _bundle(root: Path, text_spec: dict | None = None) -> Path:
    """A bundle whose only recorded extractor is the text one (`text_spec`), so labelling reaches it."""
    specs = {"a": None, "t": text_spec or synthetic_spec("t", 5, seed=0).to_dict(), "v": None}
    return save_bundle(root / "best", create_fusion("late_fusion", TASK, hidden=8), extractor_specs=specs)


def _edit(bundle: Path, change) -> None:
    data = json.loads((bundle / "bundle.json").read_text())
    change(data)
    (bundle / "bundle.json").write_text(json.dumps(data))


def _label(tmp_path: Path, bundle: Path, capsys, *extra: str) -> tuple[int, str]:
    videos = tmp_path / "videos"
    videos.mkdir(exist_ok=True)
    (videos / "pending.wav").write_bytes(b"")  # one clip to label: a run with nothing to do loads no checkpoint
    code = main(["label", "--videos", str(videos), "--out", str(tmp_path / "labels.csv"), "--checkpoint",
                 str(bundle), "--device", "cpu", "--quiet", "--no-asr", *extra])
    return code, capsys.readouterr().err


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_bundle_cannot_make_label_run_code_from_a_model_folder(tmp_path):
    """The issue's exact repro: extractors.t.config = {model: <folder>, trust_remote_code: true}, no hash."""
    marker = tmp_path / "marker.txt"
    folder = _hostile_model_folder(tmp_path, marker)
    bundle = _bundle(tmp_path)
    _edit(bundle, lambda data: data["extractors"].update(
        t={"name": "hf_text", "modality": "t", "config": {"model": str(folder), "trust_remote_code": True},
           "output_dim": 5}))
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "pending.wav").write_bytes(b"")  # one clip to label: a run with nothing to do loads no checkpoint
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "affectflow.pipeline.cli.main", "label", "--videos", str(videos),
                             "--out", str(tmp_path / "labels.csv"), "--checkpoint", str(bundle), "--device", "cpu",
                             "--quiet", "--no-asr"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert not marker.exists(), "a bundle made affectflow import code from a model folder"
    assert result.returncode == 2, result.stderr[-2000:]
    line = _one_line(result.stderr)
    assert str(bundle) in line and "extractors.t" in line


@pytest.mark.parametrize("hashed", [True, False], ids=["hash_recomputed", "no_hash"])
def test_recorded_trust_remote_code_is_refused_without_the_flag(tmp_path, capsys, hashed):
    marker = tmp_path / "marker.txt"
    folder = _hostile_model_folder(tmp_path, marker)
    config = {"model": str(folder), "trust_remote_code": True}
    spec = {"name": "hf_text", "modality": "t", "config": config, "output_dim": 5}
    if hashed:  # anyone can compute a matching hash: it is no permission either
        spec["config_hash"] = extractor_class("hf_text").config_class(**config).config_hash("hf_text")
    bundle = _bundle(tmp_path, spec)
    code, stderr = _label(tmp_path, bundle, capsys)
    assert code == 2 and not marker.exists()
    line = _one_line(stderr)
    assert str(bundle) in line and "extractors.t" in line
    assert ("trust_remote_code" if hashed else "config_hash") in line


def test_a_missing_or_mismatched_config_hash_is_refused_naming_bundle_and_modality(tmp_path, capsys):
    config = extractor_class("hf_text").config_class(model="minilm").to_dict()
    recorded = {"name": "hf_text", "modality": "t", "config": config, "config_hash": "0" * 16, "output_dim": 5}
    bundle = _bundle(tmp_path, recorded)
    code, stderr = _label(tmp_path, bundle, capsys)
    assert code == 2 and "does not match" in _one_line(stderr) and f"{bundle}: extractors.t" in stderr
    with pytest.raises(ValueError, match="no config_hash"):
        extractor_from_spec({key: value for key, value in recorded.items() if key != "config_hash"},
                            source=f"{bundle}: extractors.t")


def _replace_weights(bundle: Path, how: str) -> None:
    weights = bundle / "model.safetensors"
    if how == "pickle":
        weights.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    elif how == "random":
        weights.write_bytes(os.urandom(4096))
    elif how == "empty":
        weights.write_bytes(b"")
    else:
        _edit(bundle, lambda data: data["hyperparameters"].update(surprise=3))


BREAKAGES = ["pickle", "random", "empty", "unknown_hyperparameter"]


@pytest.mark.parametrize("how", BREAKAGES)
def test_an_unusable_bundle_is_a_clear_value_error(tmp_path, how):
    bundle = _bundle(tmp_path)
    _replace_weights(bundle, how)
    with pytest.raises(ValueError, match=str(bundle)) as caught:
        load_bundle(bundle)
    assert "\n" not in str(caught.value)
    assert ("surprise" if how == "unknown_hyperparameter" else "safetensors") in str(caught.value)


@pytest.mark.parametrize("how", BREAKAGES)
def test_label_with_an_unusable_bundle_exits_2_with_one_line(tmp_path, capsys, how):
    bundle = _bundle(tmp_path)
    _replace_weights(bundle, how)
    code, stderr = _label(tmp_path, bundle, capsys)
    assert code == 2
    assert str(bundle) in _one_line(stderr)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_feature_corpus(tmp_path_factory.mktemp("corpus"), dims={"a": 6, "t": 5, "v": 4},
                               split_sizes={"train": 8, "valid": 4, "test": 4}, max_frames=2, seed=3)


@pytest.mark.parametrize("how", BREAKAGES)
def test_evaluate_with_an_unusable_bundle_exits_2_with_one_line(tmp_path, capsys, corpus, how):
    task = TaskSpec("classification", {"a": 6, "t": 5, "v": 4}, corpus.class_names)
    specs = {m: FeatureStore.open(path).spec for m, path in corpus.stores.items()}
    bundle = save_bundle(tmp_path / "best", create_fusion("late_fusion", task, hidden=8), extractor_specs=specs)
    _replace_weights(bundle, how)
    code = main(["evaluate", "--checkpoint", str(bundle), "--manifest", str(corpus.manifest), "--features",
                 str(corpus.features), "--device", "cpu", "--no-progress", "--out", str(tmp_path / "report")])
    assert code == 2
    assert str(bundle) in _one_line(capsys.readouterr().err)
