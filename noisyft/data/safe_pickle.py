"""A restricted unpickler for the CIFAR python batches: data only, never code.

The official CIFAR-10/100 "python version" files are pickles of a dict of
bytes keys, lists of ints/bytes and one numpy array. A plain ``pickle.load``
would call whatever function a file names, so a ``cifar10:PATH`` (typed by the
user, or taken from a shared run folder's ``config.json`` by ``report`` and
``--resume``) could run code of the file author's choosing. This unpickler
admits only the few globals those files need to rebuild numpy arrays; any other
global (``os.system``, ``builtins.eval``, …) is refused before it is resolved, so
reading a hostile file can fail but never execute anything.
"""
from __future__ import annotations

import io
import pickle
from typing import IO, Union

import numpy as np


class UnsafePickle(pickle.UnpicklingError):
    """The pickle names a global that plain data does not need."""


class PersistentRef(pickle.UnpicklingError):
    """The pickle refers to data stored outside it (a torch file's tensor storages); plain data never does."""


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    table: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x and 2.x pickles
        table[(mod, "_reconstruct")] = multiarray._reconstruct
        table[(mod, "scalar")] = multiarray.scalar
    if hasattr(numeric, "_frombuffer"):  # protocol-5 pickles of arrays
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            table[(mod, "_frombuffer")] = numeric._frombuffer
    return table


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes (latin-1 only)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickle(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _DataUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if _DataUnpickler._allowed is None:
            _DataUnpickler._allowed = _numpy_globals()
        try:
            return _DataUnpickler._allowed[(module, name)]
        except KeyError:
            raise UnsafePickle(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise PersistentRef(str(pid[0] if isinstance(pid, tuple) and pid else pid))


def load_data_pickle(data: Union[bytes, IO[bytes]], encoding: str = "bytes"):
    """Unpickle ``data`` (bytes, or a binary stream: one pickle is read from it) admitting only dicts, lists, tuples, str/bytes, numbers and numpy arrays.

    Raises :class:`UnsafePickle` (naming the refused global) for anything else, and
    :class:`PersistentRef` when it refers to storage outside the pickle (tensors in a torch file).
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    return _DataUnpickler(stream, encoding=encoding).load()
