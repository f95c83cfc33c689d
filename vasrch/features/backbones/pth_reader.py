"""Read a PyTorch state dict (.pth/.pt) into numpy arrays without torch and without arbitrary
unpickling.

Both layouts written by `torch.save` are understood:

- the zip layout (torch >= 1.6): `<root>/data.pkl` plus one raw little-endian file per storage
  under `<root>/data/<key>`;
- the legacy layout: a magic-number pickle, a protocol-version pickle, a sys-info pickle, the
  main pickle, a pickle listing the storage keys, then for each key an int64 element count
  followed by the raw bytes.

The pickles are read by an `Unpickler` that resolves only `collections.OrderedDict`,
`torch._utils._rebuild_tensor_v2` and the `torch.*Storage` types, each to a small local stand-in;
any other global raises `pickle.UnpicklingError` naming it, before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vasrch.errors import DataError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # widened to float32 after reading
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    """A flat storage; `data` is filled as soon as its bytes have been read."""

    storage_type: _StorageType
    key: str
    numel: int
    data: np.ndarray | None = None
    views: list[tuple[_Storage, int]] = field(default_factory=list)


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_rest) -> _TensorRef:
    """Stand-in for torch._utils._rebuild_tensor_v2: records the view, reads nothing yet."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor rebuilt from a non-storage object: {storage!r}")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that allows only the globals a plain state dict needs."""

    def __init__(self, file: BinaryIO, load_storage) -> None:
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"refused to load global {module}.{name}: a state dict needs only tensors; "
            "this file is not a plain PyTorch state dict (or it is malicious)"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        return self._load_storage(storage_type, str(pid[2]), int(pid[4]), pid[5:])


def _restricted_load(file: BinaryIO, load_storage=None) -> Any:
    def refuse(*_args):
        raise pickle.UnpicklingError("storage reference outside the main pickle")

    return _RestrictedUnpickler(file, load_storage or refuse).load()


def _materialize(ref: _TensorRef) -> np.ndarray:
    """Apply a tensor's offset, size and stride to its storage's data (a copy, C-contiguous)."""
    flat = ref.storage.data
    if flat is None:
        raise DataError(f"storage {ref.storage.key} was never read")
    if len(ref.size) != len(ref.stride) or any(s < 0 for s in (*ref.size, *ref.stride)):
        raise DataError(f"bad tensor view: size {ref.size}, stride {ref.stride}")
    if 0 in ref.size:
        view = np.empty(ref.size, dtype=flat.dtype)
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        if ref.offset < 0 or last >= flat.size:
            raise DataError(
                f"tensor view (offset {ref.offset}, size {ref.size}, stride {ref.stride}) "
                f"runs past its storage of {flat.size} elements"
            )
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :], shape=ref.size, strides=[s * item for s in ref.stride]
        )
    out = np.array(view, copy=True, order="C")
    if ref.storage.storage_type.name == "BFloat16Storage":
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out.astype(out.dtype.newbyteorder("="), copy=False)


def _to_arrays(obj: Any, path: Path) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a state dict")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise DataError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        out[str(key)] = _materialize(value)
    return out


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise DataError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        root = pkl[0][: -len("data.pkl")]
        if f"{root}byteorder" in names and zf.read(f"{root}byteorder").strip() != b"little":
            raise DataError(f"{path} was saved big-endian; only little-endian is supported")
        storages: dict[str, _Storage] = {}

        def load_storage(storage_type: _StorageType, key: str, numel: int, _rest) -> _Storage:
            if key not in storages:
                raw = zf.read(f"{root}data/{key}")
                data = np.frombuffer(raw, dtype=storage_type.dtype)
                if data.size < numel:
                    raise DataError(f"{path}: storage {key} is truncated")
                storages[key] = _Storage(storage_type, key, numel, data[:numel])
            return storages[key]

        obj = _restricted_load(io.BytesIO(zf.read(pkl[0])), load_storage)
    return _to_arrays(obj, path)


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        if _restricted_load(f) != LEGACY_MAGIC_NUMBER:
            raise DataError(f"{path} is not a PyTorch checkpoint (bad magic number)")
        if _restricted_load(f) != LEGACY_PROTOCOL_VERSION:
            raise DataError(f"{path}: unsupported legacy protocol version")
        sys_info = _restricted_load(f)
        if not sys_info.get("little_endian", False):
            raise DataError(f"{path} was saved big-endian; only little-endian is supported")
        roots: dict[str, _Storage] = {}

        def load_storage(storage_type: _StorageType, key: str, numel: int, rest) -> _Storage:
            root = roots.setdefault(key, _Storage(storage_type, key, numel))
            view_metadata = rest[0] if rest else None
            if view_metadata is None:
                return root
            view_key, offset, view_numel = view_metadata
            view = _Storage(storage_type, str(view_key), int(view_numel))
            root.views.append((view, int(offset)))
            return view

        obj = _restricted_load(f, load_storage)
        keys = _restricted_load(f)
        for key in keys:
            root = roots.get(str(key))
            if root is None:
                raise DataError(f"{path}: storage {key} is listed but never used")
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * root.storage_type.dtype.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes or numel < root.numel:
                raise DataError(f"{path}: storage {key} is truncated")
            root.data = np.frombuffer(raw, dtype=root.storage_type.dtype)
            for view, offset in root.views:
                view.data = root.data[offset : offset + view.numel]
    return _to_arrays(obj, path)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the tensors of a PyTorch state-dict checkpoint as {name: C-contiguous ndarray}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PyTorch checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    return _read_legacy(path)
