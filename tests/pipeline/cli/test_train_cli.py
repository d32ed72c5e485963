"""`affectflow train` / `affectflow evaluate` on generated feature stores: every registered fusion model,
every protocol, every schedule, both task kinds and both levels (tiny configs, one epoch)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from affectflow.fusion.registry import fusion_class, list_fusions
from affectflow.pipeline.train.checkpoint import read_bundle_info
from affectflow.pipeline.cli.main import main
from factories.features import make_feature_corpus

SCHEDULE_OF = {"dqf": "dqf", "mculora": "dpft", "momke": "staged"}
"""Each model trains under its paper's schedule; the others under random per-sample missingness."""
SIZES = {"train": 24, "valid": 12, "test": 12}


@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    return make_feature_corpus(tmp_path_factory.mktemp("cls"), split_sizes=SIZES, max_frames=4, seed=11)


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    return make_feature_corpus(tmp_path_factory.mktemp("reg"), kind="regression", split_sizes=SIZES, max_frames=4,
                               seed=12)


def _train(corpus, out, *extra: str) -> int:
    return main(["train", "--manifest", str(corpus.manifest), "--features", str(corpus.features), "--tiny",
                 "--epochs", "1", "--batch-size", "8", "--no-progress", "--out", str(out), *extra])


def _evaluate(corpus, checkpoints, out, *extra: str) -> int:
    return main(["evaluate", "--checkpoint", *map(str, checkpoints), "--manifest", str(corpus.manifest),
                 "--features", str(corpus.features), "--batch-size", "16", "--no-progress", "--out", str(out), *extra])


def _tiny_models() -> list[str]:
    """Models that define their own tiny_config() (FusionModel's default is the full-size config)."""
    return [name for name in list_fusions() if "tiny_config" in vars(fusion_class(name))]


def test_every_registered_model_has_a_tiny_config():
    assert {"late_fusion", "early_fusion", "mult"} <= set(list_fusions())
    assert _tiny_models() == list_fusions()


@pytest.mark.parametrize("name", _tiny_models())
def test_every_model_trains_and_evaluates_under_every_protocol(classification, tmp_path, name):
    schedule = SCHEDULE_OF.get(name, "random")
    assert _train(classification, tmp_path / "run", "--model", name, "--schedule", schedule, "--frame-level") == 0
    info = read_bundle_info(tmp_path / "run" / "best")
    assert info.architecture == name and info.frame_level and info.training["schedule"]["name"] == schedule
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["test_summary"]) == {"a", "t", "v", "av", "at", "tv", "atv", "avg_incomplete"}
    report = tmp_path / "report"
    assert _evaluate(classification, [tmp_path / "run"], report, "--protocol", "fixed", "random", "frame",
                     "--rates", "0.0", "0.5", "1.0") == 0
    result = json.loads((report / "report.json").read_text())["models"][name]
    assert 0.0 <= result["fixed"]["avg_incomplete"]["wa"] <= 1.0 and "ua" in result["random"]
    auilc = result["frame"]["random_zeros"]["auilc"]
    assert set(auilc) == {"a", "t", "v", "av", "at", "tv", "atv"} and all(0.0 <= v["wa"] <= 1.0 for v in auilc.values())
    grid = pd.read_csv(report / "fixed_wa.csv", index_col="model")
    assert list(grid.index) == [name] and list(grid.columns)[-1] == "avg_incomplete"
    assert (report / f"confusion_{name}.png").stat().st_size > 1000
    assert (report / f"auilc_{name}_random_zeros.png").stat().st_size > 1000


@pytest.mark.parametrize("schedule", ["full", "fixed", "random", "dqf", "dpft", "staged"])
def test_every_schedule_runs_from_the_cli(classification, tmp_path, schedule):
    extra = ["--condition", "at"] if schedule == "fixed" else []
    assert _train(classification, tmp_path / "run", "--model", "late_fusion", "--schedule", schedule, *extra) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["schedule"]["name"] == schedule
    if schedule == "fixed":
        assert summary["select_condition"] == "at"


def test_regression_and_conversation_level(regression, tmp_path):
    assert _train(regression, tmp_path / "utt", "--model", "mult", "--task", "regression", "--seeds", "1", "2") == 0
    summary = json.loads((tmp_path / "utt" / "summary.json").read_text())
    assert summary["select_metric"] == "mae" and len(summary["test_summary"]["atv"]["mae"]["values"]) == 2
    assert _train(regression, tmp_path / "conv", "--model", "late_fusion", "--task", "regression",
                  "--level", "conversation", "--schedule", "random") == 0
    assert read_bundle_info(tmp_path / "conv" / "best").task_spec.level == "conversation"
    report = tmp_path / "report"
    assert _evaluate(regression, [tmp_path / "utt" / "best", tmp_path / "conv"], report, "--protocol", "fixed", "random",
                     "frame", "--rates", "0.0", "1.0", "--frame-pattern", "consecutive", "--frame-fill", "noise") == 0
    grid = pd.read_csv(report / "fixed_acc2_has0.csv", index_col="model")
    assert list(grid.index) == ["mult", "late_fusion"]
    auilc = pd.read_csv(report / "auilc_consecutive_noise_mae.csv", index_col="model")
    assert auilc.shape == (2, 7)


def test_fold_resume_and_text_only_task(classification, tmp_path):
    out = tmp_path / "fold"
    args = ("--model", "early_fusion", "--fold", "Ses01", "--valid-fraction", "0.3", "--modalities", "t")
    assert _train(classification, out, *args) == 0
    first = (out / "seed-1" / "result.json").read_text()
    assert read_bundle_info(out / "best").task_spec.modalities == ("t",)
    assert _train(classification, out, *args, "--resume") == 0
    assert (out / "seed-1" / "result.json").read_text() == first  # finished run reused


def test_all_folds_give_a_cross_fold_summary(classification, tmp_path):
    out = tmp_path / "loso"
    assert _train(classification, out, "--model", "late_fusion", "--fold", "all", "--valid-fraction", "0.3") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["folds"]) == ["Ses01", "Ses02", "Ses03", "Ses04", "Ses05"]
    assert len(summary["test_summary"]["atv"]["wa"]["values"]) == 5
    assert all((out / f"fold-{fold}" / "best" / "bundle.json").is_file() for fold in summary["folds"])


def test_clear_errors(classification, tmp_path, capsys):
    assert _train(classification, tmp_path / "x", "--model", "nonexistent") == 2
    assert "unknown fusion model" in capsys.readouterr().err
    assert _train(classification, tmp_path / "x", "--model", "late_fusion", "--schedule", "fixed") == 2
    assert "needs a condition" in capsys.readouterr().err
    assert _train(classification, tmp_path / "x", "--model", "late_fusion", "--model-config", "{bad") == 2
    assert "--model-config" in capsys.readouterr().err


def test_evaluate_refuses_features_from_another_extractor(classification, tmp_path, capsys):
    assert _train(classification, tmp_path / "run", "--model", "late_fusion") == 0
    other = make_feature_corpus(tmp_path / "other", split_sizes=SIZES, seed=99)  # same dims, other config hash
    code = main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--manifest", str(classification.manifest),
                 "--features", str(other.features), "--no-progress", "--out", str(tmp_path / "report")])
    assert code == 2 and "re-extract" in capsys.readouterr().err


def test_console_script_lists_the_subcommands():
    result = subprocess.run([sys.executable, "-m", "affectflow.pipeline.cli.main", "train", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--schedule" in result.stdout and "--resume" in result.stdout


def test_evaluate_protocol_all_from_the_cli(classification, tmp_path, capsys):
    assert _train(classification, tmp_path / "run", "--model", "late_fusion", "--seeds", "1", "2") == 0
    printed = capsys.readouterr().out
    assert "late_fusion: best seed" in printed and "test            atv: wa " in printed
    report = tmp_path / "report"
    assert _evaluate(classification, [tmp_path / "run"], report, "--protocol", "all", "--rates", "0.0", "1.0") == 0
    assert json.loads((report / "report.json").read_text())["protocols"] == ["fixed", "random", "frame"]
    assert "report written to" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["cmarr", "dqf", "mculora", "momke", "sdumc"])
def test_paper_recipe_runs_end_to_end_with_a_budget(classification, tmp_path, capsys, name):
    out = tmp_path / "run"
    code = main(["train", "--manifest", str(classification.manifest), "--features", str(classification.features),
                 "--model", name, "--recipe", "paper", "--budget", "0.02", "--tiny", "--seeds", "1", "--no-progress",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"recipe 'paper' for {name}" in printed and "budget 0.02: epochs per stage scaled from" in printed
    training = read_bundle_info(out / "best").training
    recipe = training["recipe"]
    assert recipe["name"] == "paper" and recipe["budget"] == 0.02 and recipe["overrides"] == {"seeds": [1]}
    assert all(count == max(1, round(planned * 0.02)) for count, planned in
               zip(recipe["items"]["epochs"].values(), recipe["planned_epochs"].values()))
    history = json.loads((out / "seed-1" / "result.json").read_text())["history"]
    assert len(history) == sum(recipe["items"]["epochs"].values())  # no early stopping in a paper recipe


@pytest.mark.parametrize("frame_level", [False, True], ids=["utterance", "frames"])
def test_a_modality_missing_in_every_row_is_warned_about(tmp_path, capsys, frame_level):
    """Issue 16 minor: training on a modality that no row has (here vision) reports test scores, but
    first warns, naming the modality."""
    from affectflow.extractors.store import FeatureStore
    from affectflow.pipeline.core.records import FeatureSequence

    corpus = make_feature_corpus(tmp_path / "corpus", split_sizes={"train": 8, "valid": 4, "test": 4}, max_frames=3,
                                 missing_rate=0.0, seed=3)
    vision = FeatureStore.open(corpus.stores["v"])
    for segment_id in vision.segment_ids():
        vision.write(segment_id, FeatureSequence.missing(vision.output_dim, vision.extractor_id, "no face"))
    assert _train(corpus, tmp_path / "run", "--model", "late_fusion", *(["--frame-level"] if frame_level else [])) == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if "warning" in line and "'v'" in line]
    assert len(warned) == 1 and "vision" in warned[0] and "every" in warned[0], captured.err
    assert "'a'" not in captured.err and "'t'" not in captured.err
    assert "test" in captured.out
