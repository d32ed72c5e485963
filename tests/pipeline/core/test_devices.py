"""Device helpers: resolve_device, the one to_device (numpy or tensor in, dtype optional, pinned copy on CUDA),
the Ray actor-pool size both engines use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectflow.pipeline.core.devices import default_actor_count, resolve_device, to_device


def test_default_actor_count():
    assert default_actor_count(False, {"CPU": 8.0, "GPU": 2.0}) == 4  # half the CPUs
    assert default_actor_count(False, {"CPU": 1.0}) == 1  # never an empty pool
    assert default_actor_count(True, {"CPU": 8.0, "GPU": 2.0}) == 2  # one per GPU
    assert default_actor_count(True, {"CPU": 8.0, "GPU": 2.0}, actors=3) == 3  # asked for
    assert default_actor_count(False, {}) == 1


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_to_device_from_numpy_keeps_values_and_dtype():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)[:, ::2]  # non-contiguous view
    tensor = to_device(array, torch.device("cpu"))
    assert tensor.dtype == torch.uint8 and tensor.is_contiguous()
    np.testing.assert_array_equal(tensor.numpy(), array)


def test_to_device_casts_tensors_and_accepts_device_names():
    tensor = to_device(torch.ones(2, 3, dtype=torch.float64), "cpu", dtype=torch.float16)
    assert tensor.dtype == torch.float16 and tensor.device.type == "cpu"
    same = torch.zeros(2)
    assert to_device(same, torch.device("cpu")) is same


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_device_cuda_from_numpy_and_tensor():
    array = np.random.default_rng(0).random((4, 5), dtype=np.float32)
    on_gpu = to_device(array, "cuda", dtype=torch.bfloat16)
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.bfloat16
    torch.testing.assert_close(on_gpu.float().cpu(), torch.from_numpy(array).bfloat16().float())
    torch.testing.assert_close(to_device(torch.from_numpy(array), torch.device("cuda")).cpu(), torch.from_numpy(array))
