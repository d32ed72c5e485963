"""A restricted unpickler for users' feature pickles: numpy arrays and plain containers, nothing else,
and no allocation the file asks for by a size it merely states.

    data = load_restricted_pickle("MOSI/Processed/aligned_50.pkl")
    data = load_restricted_pickle(path, max_allocation=2**20)   # a tighter limit (bytes)

`pickle.load` on a file from elsewhere runs whatever the file tells it to (a `__reduce__` can call
`os.system`). The only way code gets into a pickle is a *global* (a module attribute the pickle names
and then calls), and every global goes through `Unpickler.find_class`. This one answers only the
globals numpy needs to rebuild arrays, dtypes and scalars, and the plain containers; any other name is
refused with `UnsafePickleError`, naming the file and the global, before anything is called.

A 30-byte pickle can still ask for memory: `bytearray(2**30)`, an empty numpy array of a huge shape,
an object array whose stated shape exceeds its elements, or a length prefix past the end of the file.
Every call the pickle makes (REDUCE, NEWOBJ, INST/OBJ) and every array state (BUILD) is checked before
it runs: what it would allocate beyond the data stored in the file may be at most `max_allocation`
bytes (default `DEFAULT_MAX_ALLOCATION`, 64 MiB; real feature pickles store their arrays' bytes in the
file and ask for nothing), and a length prefix may not exceed what is left of the file. Python's C
unpickler allocates a length-prefixed block before reading it and cannot be hooked per opcode, so the
pure-Python one (`pickle._Unpickler`) runs here, with those opcodes overridden.
"""

from __future__ import annotations

import _codecs
import collections
import io
import math
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MAX_ALLOCATION = 64 * 2**20
"""Bytes a pickle may make the loader allocate from a size it states (not counting data stored in the file)."""
POINTER_BYTES = 8
"""What one element of a list / tuple / set / dict built from a sequence costs at least."""


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle that names a global outside the allow-list (it could run code when loaded), or asks for
    more memory than `max_allocation`."""


class _PastTheEnd(ValueError):
    """A length prefix beyond the end of the file (truncated or hostile); its message names the file."""


def _past_the_end(source: str, count: int, remaining: int) -> _PastTheEnd:
    return _PastTheEnd(f"{source}: not a readable pickle (it asks to read {count} bytes but only {remaining} "
                       f"remain in the file: truncated or hostile)")


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


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """`_codecs.encode` for the one use pickles make of it (protocol 0-2 bytes: text -> latin1)."""
    if str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise ValueError(f"refusing _codecs.encode with encoding {encoding!r} (pickles use latin1)")
    return _codecs.encode(text, encoding, errors)


_CONTAINERS: dict[str, Any] = {"set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple,
                               "bytearray": bytearray, "complex": complex}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    **{("builtins", name): value for name, value in _CONTAINERS.items()},
    **{("__builtin__", name): value for name, value in _CONTAINERS.items()},  # protocol 0-2 spelling
    ("collections", "OrderedDict"): collections.OrderedDict,
    # Python 3 writes bytes as _codecs.encode(text, "latin1") in protocol 0-2 pickles (numpy buffers
    # included); only that encoding is answered.
    ("_codecs", "encode"): _latin1_encode,
}
"""(module, name) -> the object a pickle may reference; everything else is refused."""


def _array_bytes(shape: Any, dtype: Any) -> int:
    """Bytes of an array of `shape` and `dtype` (0 when they are not valid: numpy refuses them itself)."""
    try:
        dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        return math.prod(int(d) for d in dims) * np.dtype(dtype).itemsize
    except (TypeError, ValueError, OverflowError):
        return 0


def requested_bytes(func: Any, args: tuple, kwargs: dict | None = None) -> tuple[int, str]:
    """(bytes that calling `func(*args, **kwargs)` would allocate beyond its arguments, a description)."""
    kwargs = kwargs or {}
    if func is bytearray and args and isinstance(args[0], (int, np.integer)):
        return int(args[0]), f"bytearray({int(args[0])})"
    if func is np.ndarray:
        params = dict(zip(("shape", "dtype", "buffer"), args)) | kwargs
        if params.get("buffer") is None:
            size = _array_bytes(params.get("shape", ()), params.get("dtype", float))
            return size, f"numpy.ndarray(shape={params.get('shape')!r})"
    if func is np._core.multiarray._reconstruct and len(args) >= 3:
        return _array_bytes(args[1], args[2]), f"numpy _reconstruct(shape={args[1]!r})"
    if func in (list, tuple, set, frozenset, dict, collections.OrderedDict) and args and hasattr(args[0], "__len__"):
        return len(args[0]) * POINTER_BYTES, f"{func.__name__} of {len(args[0])} elements"
    return 0, ""


class _BoundedFile:
    """The pickle file for the unpickler: a read past the end is refused before anything is allocated."""

    def __init__(self, handle: io.BufferedReader, size: int, source: str) -> None:
        self.handle, self.size, self.source = handle, size, source

    def remaining(self) -> int:
        return self.size - self.handle.tell()

    def read(self, count: int = -1) -> bytes:
        if count > self.remaining():
            raise _past_the_end(self.source, count, self.remaining())
        return self.handle.read(count)

    def readinto(self, buffer) -> int:
        return self.handle.readinto(buffer)

    def readline(self) -> bytes:
        return self.handle.readline()


class RestrictedUnpickler(pickle._Unpickler):
    """`pickle._Unpickler` whose `find_class` answers only `ALLOWED_GLOBALS` and whose calls, array states
    and length prefixes are held to `max_allocation` (see the module docstring)."""

    def __init__(self, file: _BoundedFile, source: str, max_allocation: int = DEFAULT_MAX_ALLOCATION) -> None:
        super().__init__(file)
        self.source, self.bounded, self.max_allocation = source, file, max_allocation

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

    def _refuse_if_large(self, size: int, what: str) -> None:
        if size > self.max_allocation:
            raise UnsafePickleError(f"{self.source}: {what} would allocate {size} bytes, over the limit of "
                                    f"{self.max_allocation} bytes for memory a pickle asks for (max_allocation)")

    def _call(self, func: Any, args: tuple, kwargs: dict | None = None, new: bool = False) -> Any:
        self._refuse_if_large(*requested_bytes(func, tuple(args), kwargs))
        return func.__new__(func, *args, **(kwargs or {})) if new else func(*args, **(kwargs or {}))

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args, new=True))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args, kwargs, new=True))

    def _instantiate(self, klass: Any, args: tuple) -> None:
        self._refuse_if_large(*requested_bytes(klass, tuple(args)))
        super()._instantiate(klass, args)

    def load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.ndarray) and isinstance(state, tuple) and len(state) in (4, 5):
            shape, dtype, _, data = state[-4:]
            if not isinstance(data, (bytes, bytearray, str)):  # object arrays: a list, filled after allocating
                count = len(data) if hasattr(data, "__len__") else -1
                if _array_bytes(shape, dtype) // max(np.dtype(dtype).itemsize, 1) != count:
                    self._refuse_if_large(_array_bytes(shape, dtype), f"an array of shape {shape!r} with "
                                                                      f"{count} elements")
        super().load_build()

    def load_bytearray8(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        frame, buffered = self._unframer.current_frame, 0
        if frame:
            with frame.getbuffer() as view:
                buffered = view.nbytes - frame.tell()
        if size > buffered + self.bounded.remaining():
            raise _past_the_end(self.source, size, buffered + self.bounded.remaining())
        array = bytearray(size)
        self.readinto(array)
        self.append(array)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


def load_restricted_pickle(path: str | Path, max_allocation: int = DEFAULT_MAX_ALLOCATION) -> Any:
    """Unpickle `path` allowing only numpy arrays and plain containers (never `pickle.load`).

    max_allocation: bytes the pickle may make the loader allocate from a size it states (see the module
    docstring). Raises FileNotFoundError, UnsafePickleError (a refused global or allocation) or ValueError
    (a damaged file), each naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path}: a folder, not a pickle file")
    if not path.is_file():
        raise FileNotFoundError(f"pickle not found: {path}")
    with path.open("rb") as handle:
        file = _BoundedFile(handle, path.stat().st_size, str(path))
        try:
            return RestrictedUnpickler(file, str(path), max_allocation).load()
        except (UnsafePickleError, _PastTheEnd):
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, IndexError, KeyError, ValueError,
                struct.error, OverflowError, MemoryError, RecursionError) as error:
            raise ValueError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
