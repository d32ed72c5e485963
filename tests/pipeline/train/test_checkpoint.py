"""Checkpoint bundles: safetensors + JSON round trip, no pickle, refusal of foreign features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from affectflow.extractors.store import FeatureStore
from affectflow.fusion.contract import ModalityBatch, TaskSpec
from affectflow.fusion.registry import create_fusion, fusion_class
from affectflow.pipeline.train.checkpoint import load_bundle, read_bundle_info, save_bundle
from affectflow.pipeline.train.data import FeatureNormalizer
from factories.features import synthetic_spec

TASK = TaskSpec("classification", {"a": 6, "t": 5, "v": 4}, ("angry", "happy", "sad"))


def _batch(seed=0) -> ModalityBatch:
    generator = torch.Generator().manual_seed(seed)
    features = {m: torch.randn(3, 2, TASK.input_dims[m], generator=generator) for m in "atv"}
    masks = {m: torch.ones(3, 2, dtype=torch.bool) for m in "atv"}
    return ModalityBatch(features, masks, torch.tensor([[True, True, True], [True, False, True], [False, True, False]]))


def _specs():
    return {m: synthetic_spec(m, TASK.input_dims[m], seed=0) for m in "atv"}


def _normalizer():
    return FeatureNormalizer({m: np.full(d, 0.5, np.float32) for m, d in TASK.input_dims.items()},
                             {m: np.full(d, 2.0, np.float32) for m, d in TASK.input_dims.items()})


@pytest.mark.parametrize("name", ["late_fusion", "mult"])
def test_round_trip_gives_identical_outputs(tmp_path, name):
    torch.manual_seed(0)
    model = create_fusion(name, TASK, **fusion_class(name).tiny_config()).eval()
    path = save_bundle(tmp_path / "best", model, label_column="emotion", extractor_specs=_specs(),
                       normalizer=_normalizer(), training={"seed": 3, "selected": {"epoch": 2}})
    assert sorted(p.name for p in path.iterdir()) == ["bundle.json", "model.safetensors"]
    loaded, info = load_bundle(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(_batch()).logits, model(_batch()).logits)
    assert info.architecture == name and info.class_names == ("angry", "happy", "sad")
    assert info.label_column == "emotion" and info.training["seed"] == 3
    assert info.extractor_specs["t"] == _specs()["t"]
    np.testing.assert_array_equal(info.normalizer.std["a"], np.full(6, 2.0, np.float32))
    assert not loaded.training
    raw = json.loads((path / "bundle.json").read_text())
    assert raw["extractors"]["t"] == _specs()["t"].to_dict()  # a spec's JSON shape is unchanged
    assert raw["format"] == "affectflow-bundle" and raw["task_spec"]["input_dims"] == {"a": 6, "t": 5, "v": 4}


def test_save_replaces_an_existing_bundle(tmp_path):
    first = create_fusion("late_fusion", TASK, hidden=8)
    second = create_fusion("late_fusion", TASK, hidden=12)
    save_bundle(tmp_path / "best", first)
    save_bundle(tmp_path / "best", second)
    assert read_bundle_info(tmp_path / "best").hyperparameters["hidden"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_refuses_features_from_another_extractor_config(tmp_path):
    model = create_fusion("late_fusion", TASK, hidden=8)
    save_bundle(tmp_path / "best", model, extractor_specs=_specs())
    _, info = load_bundle(tmp_path / "best")
    same = {m: FeatureStore.create(tmp_path / f"same-{m}", spec) for m, spec in _specs().items()}
    info.check_stores(same)
    other = dict(same, t=FeatureStore.create(tmp_path / "other-t", synthetic_spec("t", 5, seed=7)))
    with pytest.raises(ValueError, match="re-extract"):
        info.check_stores(other)


def test_broken_bundles_raise_clear_errors(tmp_path):
    model = create_fusion("late_fusion", TASK, hidden=8)
    path = save_bundle(tmp_path / "best", model)
    data = json.loads((path / "bundle.json").read_text())
    data["hyperparameters"]["hidden"] = 16
    (path / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="do not fit"):
        load_bundle(path)
    data["format"] = "something-else"
    (path / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not an affectflow bundle"):
        load_bundle(path)
    (path / "bundle.json").unlink()
    with pytest.raises(FileNotFoundError, match="bundle.json"):
        load_bundle(path)
    model.hyperparameters["callback"] = object()
    with pytest.raises(ValueError, match="JSON"):
        save_bundle(tmp_path / "bad", model)


def test_multi_stage_model_reloads_in_its_saved_stage(tmp_path):
    names = [n for n in ("momke", "mculora") if _registered(n)]
    if not names:
        pytest.skip("no multi-stage fusion model is registered yet")
    cls = fusion_class(names[0])
    model = create_fusion(names[0], TASK, **cls.tiny_config())
    model.set_stage(model.stages[-1])
    save_bundle(tmp_path / "best", model)
    loaded, info = load_bundle(tmp_path / "best")
    assert info.stage == model.stages[-1] and loaded.stage == model.stages[-1]


def _registered(name: str) -> bool:
    from affectflow.fusion.registry import list_fusions

    return name in list_fusions()


def test_bundle_records_versions_and_loads_quietly_in_the_same_environment(tmp_path, recwarn):
    path = save_bundle(tmp_path / "best", create_fusion("late_fusion", TASK, hidden=8))
    versions = json.loads((path / "bundle.json").read_text())["versions"]
    assert set(versions) == {"affectflow", "torch", "transformers", "numpy", "python"}
    assert versions["torch"] in (torch.__version__, torch.__version__.split("+")[0])
    assert versions["numpy"] == np.__version__
    load_bundle(path)
    assert not [w for w in recwarn if "made with" in str(w.message)]


def test_version_differences_warn_once_per_component(tmp_path):
    path = save_bundle(tmp_path / "best", create_fusion("late_fusion", TASK, hidden=8))
    data = json.loads((path / "bundle.json").read_text())
    current_torch = data["versions"]["torch"]
    data["versions"]["torch"] = "1.0.0"
    data["versions"]["numpy"] = "0.1"
    (path / "bundle.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning) as caught:
        load_bundle(path)
    messages = sorted(str(w.message) for w in caught if "made with" in str(w.message))
    assert len(messages) == 2
    assert "numpy 0.1" in messages[0] and np.__version__ in messages[0]
    assert "torch 1.0.0" in messages[1] and current_torch in messages[1]


def test_old_bundles_without_versions_load_without_warning(tmp_path, recwarn):
    path = save_bundle(tmp_path / "best", create_fusion("late_fusion", TASK, hidden=8))
    data = json.loads((path / "bundle.json").read_text())
    del data["versions"]
    (path / "bundle.json").write_text(json.dumps(data))
    _, info = load_bundle(path)
    assert info.versions == {}
    assert not [w for w in recwarn if "made with" in str(w.message)]


def test_sdumc_with_a_non_default_text_simulator_round_trips(tmp_path):
    # The simulator's spec is a hyperparameter: the bundle rebuilds it, its weights load strictly.
    torch.manual_seed(0)
    spec = TaskSpec("regression", {"a": 6, "t": 5, "v": 4})
    simulator = {"name": "mlp_projector", "options": {"num_layers": 3, "hidden_dim": 12}}
    model = create_fusion("sdumc.tiny", spec, text_simulator=simulator).eval()
    batch = _batch()
    batch.presence[:, 1] = False  # no text: the prediction comes from the simulated flow
    batch.masks["t"][:] = False
    path = save_bundle(tmp_path / "best", model)
    loaded, info = load_bundle(path)
    assert info.hyperparameters["text_simulator"] == {
        "name": "mlp_projector", "options": {"hidden_dim": 12, "stack": 2, "num_layers": 3}}
    assert type(loaded.text_simulator).__name__ == "MLPAudioToTextProjector"
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).value, model(batch).value, rtol=0, atol=0)
        torch.testing.assert_close(loaded.text_simulator.simulate(batch)[0], model.text_simulator.simulate(batch)[0])


def test_sdumc_with_an_unregistered_simulator_refuses_to_load_and_says_why(tmp_path):
    class Silent:
        def simulate(self, batch):
            return torch.zeros(batch.batch_size, 1, 5), torch.zeros(batch.batch_size, 1, dtype=torch.bool)

    spec = TaskSpec("regression", {"a": 6, "t": 5, "v": 4})
    path = save_bundle(tmp_path / "best", create_fusion("sdumc.tiny", spec, text_simulator=Silent()))
    with pytest.raises(ValueError, match="unregistered text simulator .*Silent.*TEXT_SIMULATORS"):
        load_bundle(path)
