"""The restricted unpickler: numpy arrays and plain containers load (every protocol); anything that names
another global is refused before it can run, with the file and the global in the message."""

from __future__ import annotations

import collections
import os
import pickle
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from affectflow.pipeline.imports import UnsafePickleError, load_restricted_pickle


class RunsShell:
    """Unpickling this calls os.system (the classic malicious pickle)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CallsEval:
    def __reduce__(self):
        return eval, ("__import__('os').getcwd()",)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_and_containers_load_under_every_protocol(tmp_path, protocol):
    data = {"train": {"id": np.array(["a$_$1", "b$_$2"], dtype=object), "audio": np.ones((2, 3, 4), np.float32),
                      "lengths": [3, 1], "label": np.float32(0.5), "names": np.array(["x", "yz"])},
            "meta": (1, 2.5, "s", b"bytes", None, True), "set": {1, 2}, "ordered": collections.OrderedDict(k=1)}
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_restricted_pickle(path)
    np.testing.assert_array_equal(loaded["train"]["audio"], data["train"]["audio"])
    assert loaded["train"]["id"].tolist() == ["a$_$1", "b$_$2"] and loaded["train"]["lengths"] == [3, 1]
    assert loaded["meta"] == data["meta"] and loaded["set"] == {1, 2} and loaded["ordered"] == {"k": 1}
    assert loaded["train"]["names"].tolist() == ["x", "yz"] and float(loaded["train"]["label"]) == 0.5


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_a_pickle_that_would_run_a_shell_command_is_refused_and_nothing_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps({"train": {"id": RunsShell(marker)}}, protocol=protocol))
    with pytest.raises(UnsafePickleError) as error:
        load_restricted_pickle(path)
    message = str(error.value)
    assert str(path) in message and "system" in message and ("posix" in message or "os" in message)
    assert not marker.exists()
    # the same bytes through pickle.load would have run the command: the test pickle is really malicious
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_builtins_eval_and_foreign_classes_are_refused(tmp_path):
    for name, payload in (("eval.pkl", CallsEval()), ("frame.pkl", pd.DataFrame({"a": [1]}))):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"x": payload}))
        with pytest.raises(UnsafePickleError, match=rf"{name}: refusing to unpickle the global (builtins\.eval|pandas)"):
            load_restricted_pickle(path)


def test_a_damaged_or_absent_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(100)})[:40])
    with pytest.raises(ValueError, match="cut.pkl: not a readable pickle"):
        load_restricted_pickle(path)
    with pytest.raises(FileNotFoundError, match="nothing.pkl"):
        load_restricted_pickle(tmp_path / "nothing.pkl")


# Hand-written pickles that ask for memory by a size they merely state (opcodes as in `pickletools`).
def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _long(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


NDARRAY, RECONSTRUCT = _global("numpy", "ndarray"), _global("numpy.core.multiarray", "_reconstruct")
HUGE = 2**27  # elements: 1 GiB of float64 / object pointers
EMPTY_ARRAY = RECONSTRUCT + b"(" + NDARRAY + b"K\x00\x85C\x01bt" + b"R"  # _reconstruct(ndarray, (0,), b"b")
OBJECT_DTYPE = _global("numpy", "dtype") + b"X\x01\x00\x00\x00O\x85R"  # dtype("O")
HOSTILE = {
    "bytearray(2**30)": b"\x80\x02" + _global("__builtin__", "bytearray") + _long(2**30) + b"\x85R.",
    "numpy.ndarray(shape) via REDUCE": b"\x80\x02" + NDARRAY + _long(HUGE) + b"\x85\x85R.",
    "numpy.ndarray.__new__(shape) via NEWOBJ": b"\x80\x02" + NDARRAY + _long(HUGE) + b"\x85\x85\x81.",
    "_reconstruct of a huge shape": b"\x80\x03" + RECONSTRUCT + b"(" + NDARRAY + _long(HUGE) + b"\x85C\x01btR.",
    "an object array stating more elements than it holds": (
        b"\x80\x03" + EMPTY_ARRAY + b"(K\x01" + _long(HUGE) + b"\x85" + OBJECT_DTYPE + b"\x89]K\x01aK\x02atb."),
    "list(bytearray) of many elements": (b"\x80\x02" + _global("__builtin__", "list")
                                         + _global("__builtin__", "bytearray") + _long(2**25) + b"\x85R\x85R."),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_allocations_a_pickle_asks_for_are_refused_before_they_happen(tmp_path, name):
    path = tmp_path / "small.pkl"
    path.write_bytes(HOSTILE[name])
    assert path.stat().st_size < 200
    tracemalloc.start()
    try:
        with pytest.raises(UnsafePickleError, match=r"small.pkl: .* would allocate \d+ bytes, over the limit"):
            load_restricted_pickle(path, max_allocation=2**24)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**24  # bytes: nothing near the 32 MiB - 1 GiB asked for was allocated


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x96", b"\x8d", b"\x95"])  # BINBYTES8 BYTEARRAY8 BINUNICODE8 FRAME
def test_a_length_prefix_past_the_end_of_the_file_is_refused_before_reading(tmp_path, opcode):
    path = tmp_path / "short.pkl"
    path.write_bytes(b"\x80\x05" + opcode + (2**40).to_bytes(8, "little") + b"xy.")
    with pytest.raises(ValueError, match=r"short.pkl: not a readable pickle \(it asks to read 1099511627776 bytes "
                                         r"but only 3 remain"):
        load_restricted_pickle(path)


def test_max_allocation_is_a_parameter_and_stored_data_is_not_counted(tmp_path):
    path = tmp_path / "b.pkl"
    path.write_bytes(b"\x80\x02" + _global("__builtin__", "bytearray") + _long(2000) + b"\x85R.")
    assert load_restricted_pickle(path) == bytearray(2000)  # the default (64 MiB) allows it
    with pytest.raises(UnsafePickleError, match=r"bytearray\(2000\) would allocate 2000 bytes, over the limit of 1000"):
        load_restricted_pickle(path, max_allocation=1000)
    stored = np.arange(5000, dtype=np.float64)  # 40 kB of data in the file itself
    path.write_bytes(pickle.dumps({"a": stored, "ids": np.array(["x"] * 300, dtype=object)}, protocol=4))
    loaded = load_restricted_pickle(path, max_allocation=1000)
    np.testing.assert_array_equal(loaded["a"], stored)
    assert loaded["ids"].tolist() == ["x"] * 300


def test_codecs_encode_is_answered_only_for_latin1(tmp_path):
    path = tmp_path / "zip.pkl"
    path.write_bytes(b"\x80\x02" + _global("_codecs", "encode") + b"X\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(ValueError, match="zip.pkl: .*encoding 'zlib'"):
        load_restricted_pickle(path)
