"""Peak memory of extraction at 1x and 4x the images: it should stay flat as the catalog grows.

The 4x catalog is the dataset plus three variants of every image (mirrored, cropped to the
central 85%, both), re-encoded as JPEG into a temporary folder, so each of its files has its
own bytes and needs its own vector. Each catalog is extracted into a fresh cache by a fresh
child process (scan + `plan_chunks` + `extract_chunk`, default batch 32, shard size 1024, two
decode threads, EfficientNet-Lite0), which reports its peak RSS (`getrusage` maxrss) and its
RSS once the backbone is built, before any image. Another fresh child then reads the vectors
back as one matrix (`load_vectors`); that peak does grow with the catalog, by the matrix itself.

    python benchmarks/bench_memory.py
    python benchmarks/bench_memory.py --limit 500        # 500 and 2,000 images
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench_extract import DATASET, catalog_folder

VARIANTS = ("mirror", "crop", "mirror-crop")
CROP = 0.85


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="catalog folder")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--child", choices=["extract", "load"], help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    return p.parse_args()


def mib(n_bytes: float) -> float:
    return n_bytes / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mib() -> float:
    import psutil

    return mib(psutil.Process().memory_info().rss)


def child_extract(root: Path, workspace: Path) -> dict[str, object]:
    from vasrch.catalog.scan import ScanOptions, scan_catalog, write_catalog
    from vasrch.features.backbones import BackboneSpec, load_backbone
    from vasrch.features.extraction import cache_dir_for, extract_chunk, plan_chunks

    backbone = load_backbone(BackboneSpec(), batch_size=32)
    ready = rss_mib()
    start = time.perf_counter()
    # the sample folder links to the dataset: follow links leading out of it
    catalog = scan_catalog(root, options=ScanOptions(follow_external_symlinks=True)).table
    cache_dir = cache_dir_for(workspace, backbone.fingerprint)
    results = [
        extract_chunk(c, backbone, cache_dir, 2) for c in plan_chunks(catalog, cache_dir, 1024)
    ]
    seconds = time.perf_counter() - start
    write_catalog(catalog, workspace / "catalog.parquet")
    return {
        "images": len(catalog),
        "vectors": sum(r.extracted for r in results),
        "shards": sum(r.shard is not None for r in results),
        "seconds": seconds,
        "rss_ready_mib": ready,
        "peak_mib": peak_rss_mib(),
        "cache_dir": str(cache_dir),
    }


def child_load(workspace: Path, cache_dir: Path) -> dict[str, object]:
    import pandas as pd

    from vasrch.features.extraction import load_vectors

    catalog = pd.read_parquet(workspace / "catalog.parquet")
    ready = rss_mib()
    ids, matrix = load_vectors(cache_dir, catalog)
    return {
        "vectors": len(ids),
        "matrix_mib": mib(matrix.nbytes),
        "rss_ready_mib": ready,
        "peak_mib": peak_rss_mib(),
    }


def run_child(*args: str) -> dict[str, object]:
    cmd = [sys.executable, __file__, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"child {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_variants(src: Path, root: Path, dest: Path) -> None:
    """Mirrored, cropped and mirrored+cropped copies of one image, as new JPEGs under `dest`."""
    from PIL import Image, ImageOps

    with Image.open(src) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        w, h = im.size
        dx, dy = round(w * (1 - CROP) / 2), round(h * (1 - CROP) / 2)
        cropped = im.crop((dx, dy, w - dx, h - dy))
        images = (ImageOps.mirror(im), cropped, ImageOps.mirror(cropped))
        rel = src.relative_to(root)
        for name, variant in zip(VARIANTS, images, strict=True):
            out = dest / name / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            variant.save(out, "JPEG", quality=90)


def four_x_folder(one_x: Path, dest: Path) -> Path:
    """`dest` holding the 1x catalog (as symlinks) plus three new variants of each image."""
    from vasrch.catalog.scan import iter_image_files

    files = iter_image_files(one_x)
    for src in files:
        link = dest / "original" / src.relative_to(one_x)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(src.resolve())
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write_variants, files, [one_x] * len(files), [dest] * len(files)))
    return dest


def main() -> None:
    args = parse_args()
    if args.child == "extract":
        print(json.dumps(child_extract(args.root, args.workspace)))
        return
    if args.child == "load":
        print(json.dumps(child_load(args.workspace, args.root)))
        return
    dataset = args.dataset.resolve()
    if not dataset.is_dir():
        sys.exit(f"dataset folder not found: {dataset} (pass the clothing-small folder)")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        one_x = catalog_folder(dataset, args.limit, tmp)
        start = time.perf_counter()
        four_x = four_x_folder(one_x, tmp / "catalog-4x")
        made = time.perf_counter() - start
        rows = []
        for label, root in (("1x", one_x), ("4x", four_x)):
            workspace = tmp / f"workspace-{label}"
            ext = run_child(
                "--child", "extract", "--root", str(root), "--workspace", str(workspace)
            )
            load = run_child(
                "--child", "load", "--root", str(ext["cache_dir"]), "--workspace", str(workspace)
            )
            rows.append((label, ext, load))

    print(f"dataset  {dataset}  (4x variants written in {made:.0f} s)  CPUs {os.cpu_count()}")
    print("extract: scan + plan_chunks + extract_chunk in a fresh child, fresh cache")
    header = ("images", 8), ("vectors", 9), ("shards", 8), ("images/s", 10), ("RSS ready", 11)
    header += ("peak RSS", 10), ("peak-ready", 12)
    print(" " * 4 + "".join(f"{name:>{width}}" for name, width in header))
    for label, ext, _ in rows:
        print(
            f"{label:4}{ext['images']:>8}{ext['vectors']:>9}{ext['shards']:>8}"
            f"{ext['images'] / ext['seconds']:>10.1f}{ext['rss_ready_mib']:>8.0f} MiB"
            f"{ext['peak_mib']:>6.0f} MiB{ext['peak_mib'] - ext['rss_ready_mib']:>8.0f} MiB"
        )
    growth = rows[1][1]["peak_mib"] / rows[0][1]["peak_mib"]
    print(f"peak RSS 4x / 1x: {growth:.2f} (target: flat, ~1.0)")
    print("load_vectors: catalog's vectors as one float32 matrix, in a fresh child")
    for label, _, load in rows:
        print(
            f"{label:4}{load['vectors']:>8} vectors  matrix {load['matrix_mib']:.0f} MiB  "
            f"RSS ready {load['rss_ready_mib']:.0f} MiB  peak {load['peak_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
