"""Runners for MTCNN's three networks (P-net, R-net, O-net): eager PyTorch, or ONNX Runtime on CPU.

`TorchNetworks` (the default) runs the facenet-pytorch modules in channels-last memory. `OnnxNetworks`
exports the three networks once (TorchScript-based `torch.onnx.export`, in memory, dynamic batch and, for
P-net, dynamic height and width; about 0.35 s) and runs them in one `InferenceSession` each, with as many
intra-op threads as torch has at call time (a session per thread count, built on first use). Outputs
equal PyTorch's up to float rounding (about 1e-6).

Measured on the 2-core machine (FaceDetector's batches of 8 frames, 320x240): with one thread, which is
what the extraction job's decoding workers use, PyTorch channels-last is as fast as ONNX Runtime for P-net
and about 2x faster for R-net and O-net (P-net 8x145x193: 17 vs 27 ms; R-net x300: 30 vs 35-37 ms; O-net x60:
23-38 vs 37-39 ms), so PyTorch stays the default. ONNX Runtime wins when torch runs two OpenMP threads on
a loaded machine (spinning threads that lose their core stall every small operator: P-net 88 vs 26 ms,
R-net 144 vs 36 ms under a load average of 3), hence the option.

    networks = choose_networks(mtcnn, "onnxruntime")     # or "torch"
    regression, probabilities = networks("pnet", data)   # data float32 [B, 3, H, W]
"""

from __future__ import annotations

import io
import warnings
from typing import Protocol

import numpy as np
import torch

RUNTIMES = ("torch", "onnxruntime")
_OUTPUTS = {"pnet": ("regression", "probabilities"), "rnet": ("regression", "probabilities"),
            "onet": ("regression", "landmarks", "probabilities")}
_EXAMPLE_SIZE = {"pnet": 24, "rnet": 24, "onet": 48}


class NetworkRunner(Protocol):
    """Runs one of MTCNN's networks by name ("pnet", "rnet", "onet") on float32 [B, 3, H, W] input."""

    memory_format: torch.memory_format

    def __call__(self, name: str, data: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ...


class TorchNetworks:
    """The facenet-pytorch modules themselves, in their own dtype and device; outputs as float32."""

    memory_format = torch.channels_last

    def __init__(self, mtcnn: torch.nn.Module) -> None:
        self.mtcnn = mtcnn

    def __call__(self, name: str, data: torch.Tensor) -> tuple[torch.Tensor, ...]:
        network = getattr(self.mtcnn, name)
        dtype = next(network.parameters()).dtype
        return tuple(output.float() for output in network(data.to(dtype)))


def onnx_runtime_available() -> bool:
    """True when both `onnx` (needed by the exporter) and `onnxruntime` import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_network(network: torch.nn.Module, name: str) -> bytes:
    """ONNX bytes of one float32 CPU MTCNN network (dynamic batch; P-net also dynamic height and width)."""
    size = _EXAMPLE_SIZE[name]
    axes = {0: "batch", 2: "height", 3: "width"} if name == "pnet" else {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (torch.zeros(1, 3, size, size),), buffer, dynamo=False, input_names=["image"],
                          output_names=list(_OUTPUTS[name]), dynamic_axes={"image": axes}, opset_version=17)
    return buffer.getvalue()


class OnnxNetworks:
    """MTCNN's networks in ONNX Runtime on CPU: exported once at construction, a session per thread count.

    mtcnn: a facenet-pytorch MTCNN with float32 weights on the CPU. Picklable (sessions are rebuilt).
    """

    memory_format = torch.contiguous_format

    def __init__(self, mtcnn: torch.nn.Module) -> None:
        if not onnx_runtime_available():
            raise ImportError("the onnxruntime MTCNN runtime needs the packages onnx and onnxruntime "
                              "(pip install onnx onnxruntime), or use runtime='torch'")
        for name in _OUTPUTS:
            parameter = next(getattr(mtcnn, name).parameters())
            if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
                raise ValueError(f"the onnxruntime MTCNN runtime needs float32 CPU networks, {name} is "
                                 f"{parameter.dtype} on {parameter.device}")
        with torch.no_grad():
            self.models = {name: export_network(getattr(mtcnn, name).eval(), name) for name in _OUTPUTS}
        self._sessions: dict[tuple[str, int], object] = {}

    def __getstate__(self) -> dict:
        return {"models": self.models}

    def __setstate__(self, state: dict) -> None:
        self.models, self._sessions = state["models"], {}

    def session(self, name: str):
        """The InferenceSession of network `name` for torch's current thread count (built on first use)."""
        import onnxruntime

        threads = torch.get_num_threads()
        key = (name, threads)
        if key not in self._sessions:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy cores between calls
            options.log_severity_level = 3
            self._sessions[key] = onnxruntime.InferenceSession(self.models[name], options,
                                                               providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def __call__(self, name: str, data: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image = np.ascontiguousarray(data.detach().to("cpu", torch.float32).numpy())
        return tuple(torch.from_numpy(output) for output in self.session(name).run(None, {"image": image}))


def choose_networks(mtcnn: torch.nn.Module, runtime: str = "torch") -> NetworkRunner:
    """The runner for `runtime`: "torch" (the modules themselves, any device and dtype) or "onnxruntime"
    (float32 on the CPU; needs the packages onnx and onnxruntime)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"MTCNN runtime must be one of {RUNTIMES}, got {runtime!r}")
    return OnnxNetworks(mtcnn) if runtime == "onnxruntime" else TorchNetworks(mtcnn)
