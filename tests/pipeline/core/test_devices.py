"""Device helpers: resolve_device, the one to_device (numpy or tensor in, dtype optional, pinned copy on CUDA),
the Ray actor-pool size both engines use, the one CPU count and the torch thread cap beside workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectflow.pipeline.core import devices
from affectflow.pipeline.core.devices import (
    available_cpus, capped_threads, default_actor_count, default_worker_count, resolve_device, spare_cores,
    threads_per_worker, to_device,
)


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


def test_resolve_device_names_a_device_that_is_not_one_or_not_here(monkeypatch):
    with pytest.raises(ValueError, match="device 'gpu0' is not a device"):
        resolve_device("gpu0")  # torch's own RuntimeError would be a traceback in `affectflow label`
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="'cuda:1' was requested but this machine has 1 CUDA device"):
        resolve_device("cuda:1")


@pytest.fixture
def three_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(before)


def test_capped_threads_cuts_and_restores_the_thread_count(three_threads):
    with capped_threads(1) as used:
        assert used == torch.get_num_threads() == 1
    assert torch.get_num_threads() == 3
    with capped_threads(8) as used:
        assert used == torch.get_num_threads() == 3  # a cap never raises the count
    with capped_threads(0) as used:
        assert used == 1  # never below one
    with capped_threads(None) as used:
        assert used == 3  # None: unchanged
    assert torch.get_num_threads() == 3


def test_capped_threads_restores_the_thread_count_when_the_block_raises(three_threads):
    with pytest.raises(RuntimeError, match="inside"), capped_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 3


def test_cores_are_counted_one_way_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 64)  # the machine's cores, not this process's
    assert available_cpus() == 4 and default_worker_count() == 4 and threads_per_worker(2) == 2
    assert (spare_cores(2), spare_cores(8)) == (2, 1)  # beside workers, at least one
