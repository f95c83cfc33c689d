"""CPU milliseconds per duplicate print (vasrch.features.duplicate_prints.make_print).

Photos are decoded beforehand as extraction decodes them (224 x 224), so only the print is
timed, with the process's CPU clock, over a few rounds (the first fills the weight caches).

    python benchmarks/bench_prints.py                 # 600 clothing-small photos, 3 rounds
    python benchmarks/bench_prints.py PATH --photos 200 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from vasrch.catalog.images import Decoded, decode_image
from vasrch.catalog.scan import iter_image_files
from vasrch.features.duplicate_prints import PRINT_VERSION, make_print

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clothing-small"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="folder of photos")
    p.add_argument("--photos", type=int, default=600, help="photos, spread over the folder")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    files = iter_image_files(args.dataset)
    step = max(1, len(files) // args.photos)
    decoded = [decode_image(f.read_bytes(), (224, 224)) for f in files[::step][: args.photos]]
    photos = [d for d in decoded if isinstance(d, Decoded)]
    sizes = len({(d.width, d.height) for d in photos})
    load = os.getloadavg()[0]
    print(f"prints {PRINT_VERSION}: {len(photos)} photos, {sizes} sizes, load {load:.1f}")
    for round_ in range(1, args.rounds + 1):
        start = time.process_time()
        for d in photos:
            make_print(d.pixels, d.width, d.height)
        ms = (time.process_time() - start) / len(photos) * 1000
        print(f"round {round_}: {ms:.3f} CPU ms a print")


if __name__ == "__main__":
    main()
