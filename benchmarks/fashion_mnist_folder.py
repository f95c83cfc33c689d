"""A second product-photo domain for bench_ladder.py (issue 23): Fashion-MNIST as a folder.

Debian's `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist) ships Zalando's article
photos: 28 x 28 greyscale, 10 kinds of clothes, shoes and bags, 60,000 train and 10,000 test.
This writes PER_CLASS train photos and TEST_PER_CLASS test photos of each kind, in order (no
choice is made on the test split), as JPEGs in DIR/train/<kind>/ and DIR/test/<kind>/, the
layout of clothing-small, so that

    python benchmarks/fashion_mnist_folder.py bench-work/fashion-mnist
    python benchmarks/bench_ladder.py bench-work/fashion-mnist --work bench-work/ladder-fashion \\
        --backbones efficientnet_lite0 --skip-speed
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
KINDS = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "ankle-boot")  # fmt: skip
PER_CLASS = 150
TEST_PER_CLASS = 40


def read_idx(path: Path, offset: int) -> np.ndarray:
    """The bytes of an IDX file after its header."""
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def write_split(out: Path, prefix: str, per_class: int) -> int:
    """Write the first `per_class` photos of each kind of one split; how many were written."""
    images = read_idx(SOURCE / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = read_idx(SOURCE / f"{prefix}-labels-idx1-ubyte.gz", 8)
    written = 0
    for label, kind in enumerate(KINDS):
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == label)[:per_class]:
            Image.fromarray(images[i]).convert("RGB").save(folder / f"{prefix}-{i}.jpg", quality=95)
            written += 1
    return written


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir", type=Path, help="folder to write (train/ and test/)")
    args = p.parse_args()
    if not SOURCE.is_dir():
        print(f"{SOURCE} not found: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    train = write_split(args.dir / "train", "train", PER_CLASS)
    test = write_split(args.dir / "test", "t10k", TEST_PER_CLASS)
    print(f"{train} train and {test} test photos in {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
