"""Matrices too large for memory: filled row block by row block into a .npy file, then read
back memory-mapped; the same code without a file keeps them in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def new_matrix(shape: tuple[int, ...], dtype: type, out: Path | None = None) -> np.ndarray:
    """A zeroed matrix to fill: in memory, or a new .npy file at `out` mapped for writing."""
    if out is None:
        return np.zeros(shape, dtype=dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=shape)


def finish_matrix(matrix: np.ndarray, out: Path | None = None) -> np.ndarray:
    """A filled matrix: as is in memory, or its file flushed and mapped read-only."""
    if out is None:
        return matrix
    matrix.flush()
    return np.load(out, mmap_mode="r")


def scratch_file(folder: Path | None, name: str) -> Path | None:
    """`name` in the scratch `folder` (made when missing) for a full-size matrix; None without a
    folder, where matrices stay in memory."""
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
