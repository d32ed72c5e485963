"""MA-Net: checkpoint layout, loader, forward vs the public definition, preprocessing, extraction."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from affectflow.extractors.base import create_extractor
from affectflow.extractors.manet import (MANET_EMBEDDING_DIM, MANet, load_manet_checkpoint, preprocess_manet,
                                         read_manet_state_dict)
from affectflow.pipeline.media.faces import FaceDetector, FaceTrack, track_faces
from factories.media import face_image

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

DATA = Path(__file__).parent / "data"


def published_shapes() -> list[tuple[str, list[int]]]:
    """(name, shape) of every state_dict entry of the public manet(num_classes=7), in its order."""
    document = json.loads((DATA / "manet_state_dict_shapes.json").read_text(encoding="utf-8"))
    return [(name, shape) for name, shape in document["parameters"]]


def seeded_state_dict(shapes: list[tuple[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Deterministic, well-scaled weights for each (name, shape), made without any model code.

    The reference outputs in data/manet_reference_outputs.json were computed by the public MA-Net
    definition loaded with exactly these weights.
    """
    state = {}
    for index, (name, shape) in enumerate(shapes):
        generator = torch.Generator().manual_seed(1000 + index)
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
            continue
        if name.endswith("running_var"):
            tensor = torch.rand(shape, generator=generator) + 0.5
        elif name.endswith("running_mean"):
            tensor = (torch.rand(shape, generator=generator) - 0.5) * 0.2
        elif len(shape) == 4:
            tensor = torch.randn(shape, generator=generator) * (1.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
        elif len(shape) == 2:
            tensor = torch.randn(shape, generator=generator) * (1.0 / shape[1]) ** 0.5
        elif name.endswith("weight"):  # BatchNorm gamma
            tensor = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:  # biases, BatchNorm beta
            tensor = 0.05 * torch.randn(shape, generator=generator)
        state[name] = tensor
    return state


def reference_input() -> torch.Tensor:
    return torch.rand((1, 3, 224, 224), generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The seeded weights saved like MA-Net's training script: DataParallel `module.` keys under `state_dict`."""
    state = seeded_state_dict(published_shapes())
    path = tmp_path_factory.mktemp("manet") / "[02-08]-[21-19]-model_best-acc88.33.pth"
    torch.save({"epoch": 21, "state_dict": {f"module.{key}": value for key, value in state.items()}}, path)
    return path


@pytest.fixture(scope="module")
def extractor(checkpoint):
    """The registered "manet" extractor on the seeded checkpoint (loaded once per module)."""
    return create_extractor("manet", checkpoint=str(checkpoint))


@pytest.fixture(scope="module")
def model(extractor) -> MANet:
    return extractor.model


def _cheap_state(shapes, override: dict[str, list[int]] | None = None) -> dict[str, torch.Tensor]:
    # Expanded one-element tensors: full shapes, tiny files (torch.save stores the 1-element storage).
    override = override or {}
    return {name: torch.zeros(1).expand(override.get(name, shape)) if shape else torch.tensor(0)
            for name, shape in shapes}


def test_parameter_names_and_shapes_match_the_published_model():
    expected = published_shapes()
    with torch.device("meta"):
        state = MANet().state_dict()
    assert list(state) == [name for name, _ in expected]
    mismatched = [(name, list(state[name].shape), shape) for name, shape in expected
                  if list(state[name].shape) != shape]
    assert mismatched == []
    assert len(expected) == 692
    assert sum(int(np.prod(shape)) for name, shape in expected if "num_batches" not in name) == 50_590_638


def test_loader_round_trip_with_state_dict_wrapping_and_module_prefix(model):
    saved = seeded_state_dict(published_shapes())
    loaded = model.state_dict()
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    assert not model.training
    assert all(parameter.requires_grad for parameter in model.parameters())


def test_forward_matches_the_public_definition(model):
    reference = json.loads((DATA / "manet_reference_outputs.json").read_text(encoding="utf-8"))
    with torch.no_grad():
        embedding = model.embed(reference_input())
        logits_local, logits_multi_scale = model(reference_input())
    assert embedding.shape == (1, MANET_EMBEDDING_DIM)
    np.testing.assert_allclose(embedding[0].numpy(), reference["embedding"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits_local[0].numpy(), reference["logits_local"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits_multi_scale[0].numpy(), reference["logits_multi_scale"], rtol=1e-4, atol=1e-5)


def test_plain_state_dict_without_prefix_loads(tmp_path):
    shapes = published_shapes()
    path = tmp_path / "plain.pth"
    torch.save(_cheap_state([(n, s) for n, s in shapes if "num_batches" not in n]), path)
    assert "conv1.weight" in read_manet_state_dict(path)
    loaded = load_manet_checkpoint(path)  # missing BN counters are tolerated
    assert loaded.fc_1.weight.shape == (7, 512)
    assert not loaded.fc_1.weight.detach().any()


def test_training_checkpoint_with_recorder_and_optimizer_loads_weights_only(tmp_path, monkeypatch):
    # The published file also pickles the training script's `__main__.RecorderMeter` (numpy curves),
    # the optimizer state and best_acc: weights_only=True must still read it, without running its code.
    class RecorderMeter:
        pass

    RecorderMeter.__module__, RecorderMeter.__qualname__ = "__main__", "RecorderMeter"
    monkeypatch.setattr(sys.modules["__main__"], "RecorderMeter", RecorderMeter, raising=False)
    recorder = RecorderMeter()
    recorder.total_epoch, recorder.current_epoch = 100, 22
    recorder.epoch_losses = np.zeros((100, 2), dtype=np.float32)
    recorder.epoch_accuracy = np.ones((100, 2), dtype=np.float32)
    state = {f"module.{key}": value for key, value in _cheap_state(published_shapes()).items()}
    optimizer = {"state": {0: {"momentum_buffer": torch.zeros(3)}},
                 "param_groups": [{"lr": 0.001, "momentum": 0.9, "params": [0]}]}
    checkpoint = {"epoch": 22, "state_dict": state, "best_acc": torch.tensor(88.33), "optimizer": optimizer,
                  "recorder": recorder}
    for legacy in (False, True):  # torch < 1.6 (MA-Net's PyTorch 1.2) wrote the legacy, non-zip format
        path = tmp_path / f"training-legacy{legacy}.pth"
        torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
        assert load_manet_checkpoint(path).bn1.weight.shape == (64,)


def test_mismatched_checkpoint_lists_the_first_mismatches(tmp_path):
    shapes = published_shapes()
    wrong = {"fc_1.weight": [12666, 512], "fc_2.weight": [12666, 512], "fc_1.bias": [12666], "fc_2.bias": [12666]}
    state = _cheap_state(shapes, override=wrong)
    del state["layer4_2.1.bn2_2_4.running_var"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "msceleb.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError) as error:
        load_manet_checkpoint(path)
    message = str(error.value)
    assert "msceleb.pth" in message and "first mismatches" in message
    assert "missing layer4_2.1.bn2_2_4.running_var" in message
    assert "unexpected layer5.0.conv1.weight" in message
    assert "shape of fc_1.weight: checkpoint (12666, 512), MA-Net (7, 512)" in message


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "hostile.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _RunsCodeWhenUnpickled()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_manet_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_unreadable_checkpoint_raises_clearly(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken.pth"):
        load_manet_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_manet_checkpoint(tmp_path / "nothing.pth")


def test_preprocessing_is_merbench_resize_and_to_tensor():
    from PIL import Image
    from torchvision import transforms

    crops = np.stack([face_image()[20:200, 60:240]] * 2)  # 180x180, resized to 224
    merbench = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])
    expected = torch.stack([merbench(Image.fromarray(crop)) for crop in crops])
    torch.testing.assert_close(preprocess_manet(crops), expected, rtol=0, atol=1e-6)
    ready = np.zeros((1, 224, 224, 3), np.uint8) + 255
    assert float(preprocess_manet(ready).max()) == 1.0
    with pytest.raises(ValueError, match="uint8"):
        preprocess_manet(crops.astype(np.float32))


def test_config_requires_a_checkpoint_and_a_known_precision(checkpoint):
    with pytest.raises(ValueError, match="checkpoint"):
        create_extractor("manet")
    with pytest.raises(ValueError, match="precision"):
        create_extractor("manet", checkpoint=str(checkpoint), precision="int8")
    with pytest.raises(ValueError, match="float16.*GPU"):
        create_extractor("manet", checkpoint=str(checkpoint), precision="float16", device="cpu")


def test_end_to_end_extraction_on_generated_clips(media, extractor):
    assert extractor.output_dim == 1024 and extractor.contract.image_size == (224, 224)
    assert extractor.contract.mean is None and extractor.contract.std is None  # ToTensor only
    detector = FaceDetector(device="cpu")
    face_track = track_faces(media["talking_face"], detector, fps=2.0)
    no_face_track = track_faces(media["no_face"], detector, fps=2.0)
    assert face_track.num_valid >= 2
    gap = face_track.mask.copy()
    gap[1] = False  # one faceless frame in the middle of the track
    gapped = FaceTrack(face_track.crops[np.flatnonzero(face_track.mask) != 1], gap, face_track.times,
                       face_track.boxes, face_track.probabilities, face_track.landmarks)
    with_face, with_gap, without_face, absent = extractor.extract_batch([face_track, gapped, no_face_track, None])
    assert with_face.values.shape == (face_track.num_frames, 1024)
    assert with_face.mask.tolist() == face_track.mask.tolist()
    assert np.isfinite(with_face.values).all() and np.abs(with_face.values[with_face.mask]).sum() > 0
    np.testing.assert_allclose(with_face.times, face_track.times)
    np.testing.assert_allclose(with_gap.values[gap], with_face.values[gap], rtol=1e-5, atol=1e-6)
    assert not with_gap.mask[1] and not with_gap.values[1].any()
    assert with_face.utterance().shape == (1024,)
    assert without_face.is_missing and without_face.missing_reason == "no face detected in any frame"
    assert absent.is_missing and absent.missing_reason == "no video"


def test_extractor_rejects_malformed_tracks(extractor):
    crops = np.zeros((2, 224, 224, 3), np.uint8)
    bad_count = FaceTrack(crops, np.array([True, False, False]), np.zeros(3), np.zeros((3, 4)), np.zeros(3),
                          np.zeros((3, 5, 2)))
    with pytest.raises(ValueError, match="2 crops but 1 valid frames"):
        extractor.extract(bad_count)
    with pytest.raises(ValueError, match="FaceTrack"):
        extractor.extract(crops)
