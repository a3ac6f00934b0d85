"""Fig. 7's data: cosine similarity of users' adapters, read lazily from safetensors files.

A missing, corrupt or unreadable adapter file, or adapters of different layouts, raise
ValueError naming the user, so the report lists the figure as not drawn instead of failing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

ADAPTER_FILE = "adapter_model.safetensors"
# numpy cannot hold these safetensors dtypes; such files are read through torch.
_TORCH_ONLY_DTYPES = {"BF16", "F8_E4M3", "F8_E5M2"}


def adapter_file(user: str, path: str | Path) -> Path:
    """The safetensors file of a peft adapter directory (or the file itself)."""
    path = Path(path)
    file = path / ADAPTER_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"user {user!r}: no {ADAPTER_FILE} at {path}")
    return file


@contextlib.contextmanager
def _reading(user: str, file: Path) -> Iterator[None]:
    """A corrupt or unreadable adapter file becomes a ValueError naming its user."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"user {user!r}: cannot read adapter file {file} ({exc})") from exc


def _open_adapter(stack: ExitStack, file: Path) -> Any:
    """A lazy safetensors handle: numpy where it can hold every dtype, else torch."""
    from safetensors import safe_open

    handle = stack.enter_context(safe_open(str(file), framework="numpy"))
    if any(handle.get_slice(k).get_dtype() in _TORCH_ONLY_DTYPES for k in _keys(handle)):
        handle = stack.enter_context(safe_open(str(file), framework="pt"))
    return handle


def _keys(handle: Any) -> list[str]:
    return list(handle.keys())  # safetensors handles are not iterable


def _layout(handle: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(handle.get_slice(k).get_shape()) for k in _keys(handle)}


def _layout_mismatch(user: str, layout: dict, ref_user: str, ref: dict) -> str:
    missing, extra = sorted(set(ref) - set(layout)), sorted(set(layout) - set(ref))
    shapes = [f"{k}: {layout[k]} vs {ref[k]}" for k in sorted(set(ref) & set(layout))
              if layout[k] != ref[k]]
    details = "; ".join(
        part for part in (
            f"missing {missing}" if missing else "",
            f"extra {extra}" if extra else "",
            f"shapes differ ({', '.join(shapes)})" if shapes else "",
        ) if part
    )
    return (f"adapter of user {user!r} does not match user {ref_user!r}'s ({details}); "
            "compare adapters of one PEFT method and base model only")


def _flat(handle: Any, key: str) -> np.ndarray:
    return np.asarray(_tensor(handle, key), dtype=np.float64).reshape(-1)


def _read_flat(user: str, file: Path, handle: Any, key: str) -> np.ndarray:
    with _reading(user, file):
        return _flat(handle, key)


def _units(keys: list[str]) -> list[tuple[str, ...]]:
    """What to compare, in order: (lora_A, lora_B) key pairs, and every other tensor alone."""
    paired = {k for k in keys if ".lora_A." in k and k.replace(".lora_A.", ".lora_B.") in keys}
    units: list[tuple[str, ...]] = []
    for key in sorted(keys):
        if key in paired:
            units.append((key, key.replace(".lora_A.", ".lora_B.")))
        elif not (".lora_B." in key and key.replace(".lora_B.", ".lora_A.") in paired):
            units.append((key,))
    return units


def _read_unit(user: str, file: Path, handle: Any, unit: tuple[str, ...]) -> np.ndarray:
    """A tensor flattened, or for a LoRA pair its weight update B @ A flattened."""
    if len(unit) == 1:
        return _read_flat(user, file, handle, unit[0])
    with _reading(user, file):
        a, b = (np.asarray(_tensor(handle, k), dtype=np.float64) for k in unit)
    return (b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)).reshape(-1)


def _tensor(handle: Any, key: str) -> np.ndarray:
    tensor = handle.get_tensor(key)
    return tensor if isinstance(tensor, np.ndarray) else tensor.float().numpy()


def adapter_similarity(paths: Mapping[str, str | Path]) -> tuple[list[str], np.ndarray]:
    """Cosine similarity of users' adapters: what each user's data changed, side by side.

    LoRA modules count by their weight update ``B @ A``: every user's ``A`` starts from the
    same seeded random init and barely moves in a short training, so raw tensors would
    look ~0.99 alike whatever the users taught them. Other tensors count as they are.
    Accumulates the Gram matrix one module at a time (memory: users x largest module).
    An all-zero adapter gets NaN similarities. A missing, corrupt or unreadable file
    raises ValueError naming its user.
    """
    users = list(paths)
    if not users:
        raise ValueError("no adapters given")
    files = {user: adapter_file(user, paths[user]) for user in users}
    with ExitStack() as stack:
        handles, layouts = {}, {}
        for user in users:
            with _reading(user, files[user]):
                handles[user] = _open_adapter(stack, files[user])
                layouts[user] = _layout(handles[user])
        ref = users[0]
        if not layouts[ref]:
            raise ValueError(f"adapter of user {ref!r} has no tensors")
        for user in users[1:]:
            if layouts[user] != layouts[ref]:
                raise ValueError(_layout_mismatch(user, layouts[user], ref, layouts[ref]))
        gram = np.zeros((len(users), len(users)))
        for unit in _units(list(layouts[ref])):
            block = np.stack([_read_unit(user, files[user], handles[user], unit)
                              for user in users])
            gram += block @ block.T
    norms = np.sqrt(np.diag(gram))
    with np.errstate(divide="ignore", invalid="ignore"):
        matrix = gram / np.outer(norms, norms)
    matrix[(norms == 0)[:, None] | (norms == 0)[None, :]] = np.nan
    return users, np.clip(matrix, -1.0, 1.0)
