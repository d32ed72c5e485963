"""A restricted unpickler for users' feature pickles: numpy arrays and plain containers, nothing else.

    data = load_restricted_pickle("MOSI/Processed/aligned_50.pkl")

`pickle.load` on a file from elsewhere runs whatever the file tells it to (a `__reduce__` can call
`os.system`). The only way code gets into a pickle is a *global* (a module attribute the pickle names
and then calls), and every global goes through `Unpickler.find_class`. This one answers only the
globals numpy needs to rebuild arrays, dtypes and scalars, and the plain containers; any other name is
refused with `UnsafePickleError`, naming the file and the global, before anything is called.
"""

from __future__ import annotations

import _codecs
import collections
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle that names a global outside the allow-list (it could run code when loaded)."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy's array / dtype / scalar reconstruction, under its numpy 1 (`numpy.core`) and numpy 2
    (`numpy._core`) module names: pickles made with either must load."""
    multiarray, numeric = np._core.multiarray, np._core.numeric
    found: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        found[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        found[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        found[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return found


_CONTAINERS: dict[str, Any] = {"set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple,
                               "bytearray": bytearray, "complex": complex}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    **{("builtins", name): value for name, value in _CONTAINERS.items()},
    **{("__builtin__", name): value for name, value in _CONTAINERS.items()},  # protocol 0-2 spelling
    ("collections", "OrderedDict"): collections.OrderedDict,
    # Python 3 writes bytes as _codecs.encode(text, "latin1") in protocol 0-2 pickles (numpy buffers
    # included); a pure text-to-bytes function.
    ("_codecs", "encode"): _codecs.encode,
}
"""(module, name) -> the object a pickle may reference; everything else is refused."""


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` answers only `ALLOWED_GLOBALS` (see the module docstring)."""

    def __init__(self, file, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        """The allowed object for (module, name); UnsafePickleError naming the file otherwise."""
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to unpickle the global {module}.{name}: feature pickles may hold "
                f"only numpy arrays and plain containers (loading anything else can run code)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refusing a persistent id {pid!r} (not a plain feature pickle)")


def load_restricted_pickle(path: str | Path) -> Any:
    """Unpickle `path` allowing only numpy arrays and plain containers (never `pickle.load`).

    Raises FileNotFoundError, UnsafePickleError (a refused global) or ValueError (a damaged file),
    each naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle not found: {path}")
    with path.open("rb") as handle:
        try:
            return RestrictedUnpickler(handle, str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, IndexError) as error:
            raise ValueError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
