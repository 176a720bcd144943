"""Read vision checkpoints without running their code: a restricted torch-pickle reader and a checked safetensors one.

`read_torch_checkpoint` reads both `torch.save` formats (the legacy five-pickles-then-data file and the zip
archive) into numpy arrays. Its unpickler resolves only `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`
and the `torch.*Storage` type names; any other global is refused by name before anything runs. torch is never
imported. Tensors are rebuilt with their stored strides (conv kernels converted from TF often are not
C-contiguous), and every view is checked to lie inside its storage first.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlxft.errors import BrokenFileError, ModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": np.uint16,  # numpy has no bfloat16: read the bits, widen to float32 afterwards
}
PICKLE_HINT = "only state dicts of plain tensors can be read; convert the checkpoint to safetensors to load anything else"


class UnsafePickleError(ModelError):
    """A pickle that names a global outside the allowed tensor-rebuild set: it is refused, nothing of it runs."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self):
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: type
    numel: int
    view: tuple[int, int] | None = None  # (offset, numel) of a storage view into the root storage (legacy files)
    bfloat16: bool = False


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stands in for torch's: records where the tensor's elements are; the data is read once the pickle is done."""
    if not isinstance(storage, _StorageRef):
        raise UnsafePickleError("a tensor in the checkpoint is not built on a storage", PICKLE_HINT)
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"{self.source}: the pickle asks for the global {module}.{name}, which is not allowed (refused; nothing was run)",
            PICKLE_HINT,
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"{self.source}: the pickle holds a persistent object that is not a tensor storage", PICKLE_HINT)
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # legacy storage view: (view_key, offset, view_numel)
            view = (int(view[1]), int(view[2]))
        return _StorageRef(str(pid[2]), pid[1].dtype, int(pid[4]), view, pid[1].name == "BFloat16Storage")


def _unpickle(data, source: str):
    try:
        return _RestrictedUnpickler(data if hasattr(data, "read") else io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise BrokenFileError(source, f"is not a readable torch checkpoint ({type(exc).__name__}: {exc})", PICKLE_HINT) from None


def read_torch_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict of a `torch.save` file (legacy or zip) as name -> numpy array, read without torch."""
    path = Path(path)
    if not path.is_file():
        raise BrokenFileError(path, "the checkpoint is missing" if not path.exists() else "the checkpoint should be a file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pkl = next((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")), None)
            if pkl is None:
                raise BrokenFileError(path, "is a zip file but not a torch checkpoint (no data.pkl)")
            prefix = pkl[: -len("data.pkl")]
            state = _unpickle(zf.read(pkl), str(path))
            refs = _tensor_refs(state, path)
            raw = {}
            for key in {r.storage.key for r in refs.values()}:
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise BrokenFileError(path, f"storage {key!r} is missing from the archive", "the file is incomplete: copy it again")
                raw[key] = zf.read(member)
    else:
        with open(path, "rb") as fh:
            magic = _unpickle(fh, str(path))
            if magic != LEGACY_MAGIC:
                raise BrokenFileError(path, "is not a torch checkpoint (no torch.save magic number)")
            if _unpickle(fh, str(path)) != LEGACY_PROTOCOL:
                raise BrokenFileError(path, "uses a torch.save protocol other than 1001")
            sys_info = _unpickle(fh, str(path))
            if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
                raise BrokenFileError(path, "was saved on a big-endian machine, which is not supported")
            state = _unpickle(fh, str(path))
            keys = _unpickle(fh, str(path))
            refs = _tensor_refs(state, path)
            dtypes = {r.storage.key: r.storage.dtype for r in refs.values()}
            raw = {}
            for key in keys:
                head = fh.read(8)
                if len(head) != 8:
                    raise BrokenFileError(path, f"is truncated: storage {key!r} is missing", "the file is incomplete: copy it again")
                numel = struct.unpack("<q", head)[0]
                itemsize = np.dtype(dtypes.get(str(key), np.uint8)).itemsize
                data = fh.read(numel * itemsize)
                if len(data) != numel * itemsize:
                    raise BrokenFileError(path, f"is truncated inside storage {key!r}", "the file is incomplete: copy it again")
                raw[str(key)] = data
    return {name: _materialize(name, ref, raw, path) for name, ref in refs.items()}


def _tensor_refs(state, path) -> dict[str, _TensorRef]:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BrokenFileError(path, f"holds a {type(state).__name__}, not a state dict of tensors", PICKLE_HINT)
    bad = [str(k) for k, v in state.items() if not isinstance(v, _TensorRef)]
    if bad:
        raise BrokenFileError(path, f"entries that are not tensors: {', '.join(bad[:5])}", PICKLE_HINT)
    return {str(k): v for k, v in state.items()}


def _materialize(name: str, ref: _TensorRef, raw: dict[str, bytes], path) -> np.ndarray:
    """The tensor as a C-contiguous array, taken from its storage with its own offset and strides."""
    st = ref.storage
    flat = np.frombuffer(raw[st.key], dtype=st.dtype)
    if st.view is not None:
        flat = flat[st.view[0]: st.view[0] + st.view[1]]
    out = strided_view(flat, ref.offset, ref.size, ref.stride, what=f"{path}: tensor {name!r}")
    if st.bfloat16:
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def strided_view(flat: np.ndarray, offset: int, size, stride, *, what: str = "tensor") -> np.ndarray:
    """A copy of `flat[offset + sum(i_k * stride_k)]` over `size`: torch's as_strided, bounds-checked first."""
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise BrokenFileError(what, f"has a malformed size {size} / stride {stride}")
    if math.prod(size) == 0:
        return np.zeros(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise BrokenFileError(what, f"reaches element {last} of a storage of {flat.size} (size {size}, stride {stride})")
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * item for s in stride], writeable=False)
    return np.ascontiguousarray(view)


def read_safetensors(path: str | Path) -> dict:
    """The tensors of a safetensors file as mx arrays, after checking its header and sizes (upcast to float32)."""
    import mlx.core as mx

    from mlxft.llm.model_files import load_safetensors_checked

    arrays = load_safetensors_checked(path, "the backbone weights")
    return {k: (v.astype(mx.float32) if mx.issubdtype(v.dtype, mx.floating) else v) for k, v in arrays.items()}
