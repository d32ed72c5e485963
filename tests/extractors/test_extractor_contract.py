"""The extractor contract, checked for every registered extractor (parametrized over `list_extractors()`).

A newly registered extractor is picked up automatically: it is built with `create_extractor(name)`
unless FACTORIES below says how (e.g. a tiny model instead of a real checkpoint). Checks: spec
round trip, output shapes/dtypes/masks, no NaN, missing input -> missing, determinism, batch ==
single, bad input -> ValueError, and that the extraction job resumes (a second run skips all).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
import pytest

from affectflow.extractors.base import Extractor, create_extractor, extractor_from_spec, list_extractors
from affectflow.extractors.spec import ExtractorSpec
from affectflow.extractors.run import run_extraction
from affectflow.extractors.store import FeatureStore
from factories.extractors import synthetic_face_track
from factories.tolerances import TINY_MODEL_TERMS, float32_chain_bound
from affectflow.pipeline.core.manifest import manifest_from_segments
from affectflow.pipeline.core.records import Segment

# name -> factory(tiny_models) for extractors whose default config would need a real checkpoint.
FACTORIES: dict[str, Callable[[dict], Extractor]] = {
    "hf_audio": lambda models: create_extractor("hf_audio", model=str(models["wavlm"]), chunk_seconds=1.0),
    "hf_text": lambda models: create_extractor("hf_text", model=str(models["bert"])),
    "hf_vision": lambda models: create_extractor("hf_vision", model=str(models["vit"])),
    "manet": lambda models: create_extractor("manet", checkpoint=str(_random_manet_checkpoint(models))),
    "whisper": lambda models: create_extractor("whisper", model=str(_tiny_whisper_folder(models))),
}
NAMES = list_extractors()


def _random_manet_checkpoint(models: dict):
    """A seeded random-weight MA-Net in the published checkpoint layout, saved beside the tiny models."""
    from pathlib import Path

    import torch

    from affectflow.extractors.manet import MANet, save_manet_checkpoint

    torch.manual_seed(0)
    return save_manet_checkpoint(MANet(), Path(next(iter(models.values()))).parent / "manet_random.pth")


def _tiny_whisper_folder(models: dict):
    """A tiny random-weight Whisper in CTranslate2 format, converted beside the tiny models."""
    from pathlib import Path

    from factories.whisper import save_tiny_whisper_model

    return save_tiny_whisper_model(Path(next(iter(models.values()))).parent / "whisper_tiny")


BAD_INPUTS = {"a": [np.zeros((2, 800), np.float32), np.zeros(800, np.int16)], "t": [42],
              "v": ["not a face track", np.zeros((3, 64, 64, 3), np.uint8)]}


@pytest.fixture(scope="module", params=NAMES)
def extractor(request, tiny_models) -> Extractor:
    name = request.param
    factory = FACTORIES.get(name, lambda models: create_extractor(name))
    try:
        return factory(tiny_models)
    except TypeError as error:
        pytest.fail(f"extractor {name!r} cannot be built with its default config ({error}); "
                    f"add a factory for it to FACTORIES in {__file__}")


@pytest.fixture(scope="module")
def inputs(speech) -> dict[str, list[Any]]:
    """Per modality: [a good item, None (missing), a shorter good item]."""
    return {
        "a": [speech, None, speech[:12000]],
        "t": ["i am so happy to see you today", None, "this is not good news"],
        "v": [synthetic_face_track([True, True, False, True]), None, synthetic_face_track([False, True, True])],
    }


def _check_present(extractor: Extractor, seq) -> None:
    assert seq.values.ndim == 2 and seq.values.shape[1] == extractor.output_dim
    assert seq.values.dtype == np.float32 and seq.mask.dtype == np.bool_
    assert seq.times.shape == seq.mask.shape == (seq.values.shape[0],)
    assert seq.mask.any() and not seq.is_missing
    assert np.isfinite(seq.values).all() and np.isfinite(seq.times).all()
    assert np.all(np.diff(seq.times) >= 0), "frame times must not go backwards"
    assert np.abs(seq.values[seq.mask]).sum() > 0, "valid frames must carry features"
    assert seq.extractor_id == extractor.extractor_id
    utterance = seq.utterance()
    assert utterance.shape == (extractor.output_dim,) and np.isfinite(utterance).all()


def test_identity_and_spec_round_trip(extractor):
    spec = extractor.spec()
    data = spec.to_dict()
    assert json.loads(json.dumps(data)) == data, "spec must be JSON-able"
    assert sorted(data) == ["config", "config_hash", "modality", "name", "output_dim"]
    assert ExtractorSpec.from_dict(data) == spec and spec.extractor_id == extractor.extractor_id
    assert spec.modality in ("a", "t", "v") and spec.output_dim == extractor.output_dim > 0
    assert extractor.contract.modality == extractor.modality
    for recorded in (spec, data):
        rebuilt = extractor_from_spec(recorded)  # a dict is accepted
        assert rebuilt.config_hash == extractor.config_hash and rebuilt.extractor_id == extractor.extractor_id
    unhashed = {key: value for key, value in data.items() if key != "config_hash"}
    with pytest.raises(ValueError, match="no config_hash"):  # a spec without a hash is unverified: refused
        extractor_from_spec(unhashed, source="bundle x: extractors.t")


def test_shapes_masks_and_missing(extractor, inputs):
    items = inputs[extractor.modality]
    results = extractor.extract_batch(items)
    assert len(results) == len(items)
    _check_present(extractor, results[0])
    _check_present(extractor, results[2])
    missing = results[1]
    assert missing.is_missing and missing.missing_reason, "a missing input must give a missing sequence"
    assert missing.values.shape[1] == extractor.output_dim and not missing.mask.any()
    assert np.all(missing.utterance() == 0)


def test_deterministic_and_batch_independent(extractor, inputs):
    items = inputs[extractor.modality]
    first = extractor.extract_batch(items)
    again = extractor.extract_batch(items)
    alone = extractor.extract(items[0])
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.mask, b.mask)
    # alone vs in a padded batch: the same sums in another order (the largest extractors here are tiny models)
    np.testing.assert_allclose(alone.values, first[0].values,
                               atol=float32_chain_bound(TINY_MODEL_TERMS, np.abs(alone.values).max(initial=0.0)))
    np.testing.assert_array_equal(alone.times, first[0].times)


@pytest.mark.parametrize("bad_index", [0, 1])
def test_bad_input_raises_value_error(extractor, bad_index):
    candidates = BAD_INPUTS[extractor.modality]
    with pytest.raises(ValueError):
        extractor.extract_batch([candidates[bad_index % len(candidates)]])


@pytest.fixture(scope="module")
def face_detector():
    from affectflow.pipeline.media.faces import FaceDetector

    return FaceDetector(device="cpu", crop_size=112)


def test_job_resumes_and_skips_stored_segments(extractor, media, face_detector, tmp_path):
    segments = [Segment(id="first", media_path=str(media["talking_face"]), start=0.0, end=1.0, text="i am so happy"),
                Segment(id="second", media_path=str(media["talking_face"]), start=1.0, end=2.0, text="oh no")]
    table = manifest_from_segments(segments)
    store = FeatureStore.create(tmp_path / extractor.extractor_id, extractor.spec())
    detector = face_detector if extractor.modality == "v" else None
    first = run_extraction(table, extractor, store, face_detector=detector, face_fps=4.0, progress=False)
    assert (first.extracted, first.skipped, first.failed) == (2, 0, {})
    assert store.segment_ids() == ["first", "second"]
    for segment_id in store.segment_ids():
        _check_present(extractor, store.read(segment_id))
    second = run_extraction(table, extractor, FeatureStore.open(store.root, extractor.spec()),
                            face_detector=detector, face_fps=4.0, progress=False)
    assert (second.extracted, second.skipped, second.failed) == (0, 2, {})
