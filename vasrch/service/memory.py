"""Give the memory of big decodes back to the operating system once they are done (glibc).

glibc serves an allocation of at least M_MMAP_THRESHOLD bytes with its own mmap, unmapped when
freed; smaller ones come from heaps that a freed block rarely lets shrink. The threshold starts
at 128 KiB but rises (up to 32 MiB) each time such a block is freed, so after one big decode,
the next decodes' buffers land in the heaps and stay there: a burst of large uploads left the
old server gigabytes above its resting size. Fixing the threshold keeps big buffers mmapped, and
`trim` hands back what the heaps hold free. Elsewhere than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_large_blocks_mapped(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve every allocation of `threshold` bytes or more with mmap, for good; True if set."""
    libc = _libc()
    return libc is not None and libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1


def trim() -> None:
    """Return the free memory at the top of glibc's heaps to the operating system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
