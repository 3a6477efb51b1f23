"""A restricted unpickler for the CIFAR python batches: what they hold, and nothing else, is rebuilt.

The CIFAR-10 "python version" is pickle: a dict of bytes keys to a uint8 array (b"data"), a list
of ints (b"labels") and byte strings. Loading a pickle with `pickle.load` runs whatever callable
the file names, so a file from elsewhere could run any code. Here `find_class` hands out no
library object at all: each global the real files name (numpy's array and dtype reconstruction,
and `_codecs.encode`, which Python 3 protocol-2 pickles use for bytes) maps to a stand-in of ours
that records and checks its arguments; the arrays are built afterwards from checked bytes with
`np.frombuffer`. Any other global (os.system, builtins.eval, an ndarray subclass, ...) is refused
before anything is called.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import numpy as np

from dad_edge.errors import DataError

# A real batch is 31 MB (CIFAR-100's train file 155 MB); pickle's objects take several times
# the bytes they are read from, so the file size bounds the memory a damaged file can claim.
MAX_FILE_BYTES = 512 << 20
INTEGER_DTYPES = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8")  # the labels may be an int array
MAX_DIMS = 8


class _NDArrayClass:
    """Stands for `numpy.ndarray` as the first argument of `_reconstruct`; calling it is refused."""


NDARRAY = _NDArrayClass()


class PickledDType:
    """A dtype the file describes: its name (an integer type) and, once its state is set, its byte order."""

    def __init__(self, name: Any, align: Any = False, copy: Any = True):
        name = name.decode("ascii") if isinstance(name, bytes) else name
        if name not in INTEGER_DTYPES:
            raise pickle.UnpicklingError(f"dtype {name!r} (a CIFAR batch holds integer arrays only)")
        self.dtype = np.dtype(name)

    def __setstate__(self, state: Tuple) -> None:
        # numpy's dtype state: (version 3 or 4, byte order, subarray, names, fields, size, alignment, flags[, meta]).
        if not (isinstance(state, tuple) and len(state) >= 5 and state[0] in (3, 4)
                and state[2] is None and state[3] is None and state[4] is None):
            raise pickle.UnpicklingError("a dtype state other than a plain number type")
        order = state[1].decode("ascii") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"dtype byte order {order!r}")
        if order in "<>" and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(order)


class PickledArray:
    """An array the file describes; `array` is set once its shape, dtype and bytes have been checked."""

    def __init__(self):
        self.array = None

    def build(self, shape: Any, dtype: Any, fortran: Any, raw: Any) -> None:
        if not isinstance(dtype, PickledDType):
            raise pickle.UnpicklingError("an array whose dtype is not a plain number type")
        if not (isinstance(shape, tuple) and len(shape) <= MAX_DIMS
                and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise pickle.UnpicklingError(f"array shape {shape!r}")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"array data of type {type(raw).__name__} (expected bytes)")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.dtype.itemsize
        if len(raw) != expected:
            raise pickle.UnpicklingError(f"array of shape {shape} {dtype.dtype} with {len(raw)} bytes of data "
                                         f"(needs {expected})")
        order = "F" if fortran else "C"
        self.array = np.frombuffer(raw, dtype.dtype).reshape(shape, order=order).copy()

    def __setstate__(self, state: Tuple) -> None:
        # numpy's array state: ([version 1,] shape, dtype, is_fortran, raw bytes).
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise pickle.UnpicklingError("an array state of an unknown form")
        self.build(*state)


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> PickledArray:
    """numpy's `_reconstruct(ndarray, (0,), b"b")`: an empty array whose state comes next."""
    if subtype is not NDARRAY or tuple(shape) != (0,):
        raise pickle.UnpicklingError("an array reconstruction other than numpy's own (a subclass, or a shape)")
    return PickledArray()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> PickledArray:
    """numpy's protocol-5 form: `_frombuffer(bytes, dtype, shape, order)`."""
    array = PickledArray()
    array.build(tuple(shape) if isinstance(shape, (tuple, list)) else shape, dtype,
                order in ("F", b"F"), buf)
    return array


def _latin1(text: Any, encoding: Any) -> bytes:
    """`_codecs.encode(str, "latin1")`: how Python 3 writes bytes in protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


# (module, name) the real files use -> what is handed out instead.
STAND_INS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 1.x (and the 2009 files)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2.x
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): PickledDType,
    ("_codecs", "encode"): _latin1,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The file names a global that a CIFAR batch never holds."""


class CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        stand_in = STAND_INS.get((module, name))
        if stand_in is None:
            raise RefusedGlobal(f"{module}.{name}")
        return stand_in

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("a persistent id")


def _finish(obj: Any) -> Any:
    """Stand-ins -> arrays, bytes keys -> str; anything not built from checked parts is refused."""
    if isinstance(obj, PickledArray):
        if obj.array is None:
            raise pickle.UnpicklingError("an array that was never given its data")
        return obj.array
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _finish(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish(v) for v in obj]
    if isinstance(obj, (PickledDType, _NDArrayClass)):
        raise pickle.UnpicklingError("a dtype or the array class on its own")
    return obj


def load_cifar_pickle(path: Union[str, Path]) -> Dict[str, Any]:
    """The dict in a CIFAR python batch (keys as str), or a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected a CIFAR-10 python batch (cifar-10-batches-py)")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{path}: {path.stat().st_size} bytes, larger than any CIFAR batch; not read")
    try:
        with open(path, "rb") as f:
            obj = _finish(CifarUnpickler(f, encoding="bytes").load())
    except RefusedGlobal as e:
        raise DataError(f"{path}: refused: the file asks to call or build {e}, which a CIFAR python batch never "
                        "holds; nothing in it was run. Use the batches from the CIFAR-10 release") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError) as e:
        raise DataError(f"{path}: not a CIFAR python batch ({type(e).__name__}: {e}); use the batches from the "
                        "CIFAR-10 release") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, not the dict of a CIFAR python batch")
    return obj
