"""Pickle-free storage: atomic file writes and nested state (optimizer, RNG) in safetensors.

safetensors holds flat name -> tensor maps plus string metadata; training state (optimizer
buffers, scheduler counters, RNG state) is nested, so ``pack_state`` splits it into tensors and
a JSON skeleton that remembers key types (optimizer state uses int keys).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

SAFETENSORS_SUFFIX = ".safetensors"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a half-written file.

    Raises a ``PermissionError``/``OSError`` naming the folder when it is not writable (disk
    full, read-only); the previous file at ``path`` is left untouched in that case.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)


def check_safetensors_file(path: str | Path) -> None:
    """Refuse anything that is not a safetensors file, without ever unpickling it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix != SAFETENSORS_SUFFIX:
        raise ValueError(f"{path.name}: only {SAFETENSORS_SUFFIX} weights are loaded (refusing {path.suffix or 'no suffix'})")
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        kind = "a pickle (torch.save) file" if head[:1] == b"\x80" or head[:2] == b"PK" else "not safetensors"
        raise ValueError(f"{path.name} is {kind}; refusing to load it (weights load only from safetensors)")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file (tensors made contiguous and moved to CPU)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file after checking it is one; corrupt files raise ``ValueError``."""
    check_safetensors_file(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{Path(path).name} is corrupt or truncated: {err}") from err


def _pack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _pack(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_pack(v, tensors) for v in obj], "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} without pickle")


def _unpack(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, dict):
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__dict__" in node:
            return {k: _unpack(v, tensors) for k, v in node["__dict__"]}
        if "__list__" in node:
            items = [_unpack(v, tensors) for v in node["__list__"]]
            return tuple(items) if node["tuple"] else items
    return node


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Save nested training state (tensors + JSON-able leaves) to one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(state, tensors)
    save_tensors(path, tensors, {"skeleton": json.dumps(skeleton)})


def load_state(path: str | Path) -> dict[str, Any]:
    """Inverse of ``save_state``."""
    from safetensors import safe_open

    tensors = load_tensors(path)
    with safe_open(str(path), framework="pt") as handle:
        skeleton = json.loads(handle.metadata()["skeleton"])
    return _unpack(skeleton, tensors)
