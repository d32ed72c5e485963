"""hf_vision on tiny ViT / CLIP-vision / whole-CLIP / DINOv2 checkpoints over face tracks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectflow.extractors.base import create_extractor
from factories.extractors import VISION_KINDS, synthetic_face_track
from factories.tolerances import TINY_MODEL_TERMS, float32_chain_bound

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation


@pytest.mark.parametrize("kind", VISION_KINDS)
def test_frame_timeline_masks_and_utterance_mean(tiny_models, face_track, kind):
    extractor = create_extractor("hf_vision", model=str(tiny_models[kind]))
    assert extractor.contract.image_size == (32, 32) and extractor.contract.channels == 3
    seq = extractor.extract(face_track)
    assert seq.values.shape == (6, 32)
    np.testing.assert_array_equal(seq.mask, face_track.mask)
    np.testing.assert_allclose(seq.times, face_track.times, atol=1e-6)
    assert np.all(seq.values[~seq.mask] == 0) and np.all(np.abs(seq.values[seq.mask]).sum(axis=1) > 0)
    np.testing.assert_allclose(seq.utterance(), seq.values[face_track.mask].mean(axis=0), rtol=1e-6)


def test_whole_clip_checkpoint_loads_its_vision_tower_only(tiny_models):
    extractor = create_extractor("hf_vision", model=str(tiny_models["clip"]))
    assert type(extractor.model).__name__ == "CLIPVisionModel"


def test_pooling_and_layers_match_the_model(tiny_models, face_track):
    from transformers import AutoImageProcessor, AutoModel

    path = tiny_models["vit"]
    model, processor = AutoModel.from_pretrained(path).eval(), AutoImageProcessor.from_pretrained(path)
    pixels = processor(images=list(face_track.crops), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        outputs = model(pixel_values=pixels, output_hidden_states=True)
    cls = create_extractor("hf_vision", model=str(path)).extract(face_track).values[face_track.mask]
    bound = float32_chain_bound(TINY_MODEL_TERMS, 4 * float(outputs.last_hidden_state.abs().max()))  # last4: 4 sums
    np.testing.assert_allclose(cls, outputs.last_hidden_state[:, 0].numpy(), atol=bound)
    mean = create_extractor("hf_vision", model=str(path), pooling="mean", layers="last4").extract(face_track)
    reference = sum(outputs.hidden_states[-4:])[:, 1:].mean(dim=1).numpy()
    np.testing.assert_allclose(mean.values[face_track.mask], reference, atol=bound)


def test_faceless_and_absent_tracks_are_missing(tiny_models):
    extractor = create_extractor("hf_vision", model=str(tiny_models["vit"]))
    faceless, absent = extractor.extract_batch([synthetic_face_track([False, False, False]), None])
    assert faceless.is_missing and faceless.values.shape == (3, 32) and not faceless.values.any()
    assert faceless.missing_reason == "no face detected in any frame"
    assert absent.is_missing and absent.values.shape == (0, 32) and absent.missing_reason == "no video"


def test_bad_configs_and_tracks_raise(tiny_models, face_track, tmp_path):
    with pytest.raises(ValueError, match="pooling"):
        create_extractor("hf_vision", model=str(tiny_models["vit"]), pooling="max")
    with pytest.raises(ValueError, match="cannot load model"):
        create_extractor("hf_vision", model=str(tmp_path / "missing"))
    extractor = create_extractor("hf_vision", model=str(tiny_models["vit"]))
    from dataclasses import replace

    with pytest.raises(ValueError, match="4 crops but 3 valid frames"):
        extractor.extract(replace(face_track, mask=np.array([True, True, False, True, False, False])))
    with pytest.raises(ValueError, match="uint8"):
        extractor.extract(replace(face_track, crops=face_track.crops.astype(np.float32)))
