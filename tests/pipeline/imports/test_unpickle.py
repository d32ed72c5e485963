"""The restricted unpickler: numpy arrays and plain containers load (every protocol); anything that names
another global is refused before it can run, with the file and the global in the message."""

from __future__ import annotations

import collections
import os
import pickle

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
