"""Catalogs in object storage and URL feeds: rescan speed of a large bucket, and extraction from
a bucket or a URL feed beside the same photos in a local folder.

`listing` uploads N tiny image-named objects to a SeaweedFS store kept in bench-work/ (once: a
later run finds them there), scans the bucket once cold (every object downloaded and hashed,
the listing record written), then times rescans of the unchanged bucket: listing + change
detection against the record (target: 100,000 objects < 30 s).

`extraction` takes the first N photos of clothing-small and runs scan + extraction (the same
calls the extract flow makes on the thread runner: scan_catalog feeding a StreamedExtraction,
then plan_chunks and extract_chunk for what is left), each run into a fresh cache: from the
local folder, from a bucket holding the same files, and from a manifest of their URLs on a
local web server, interleaved (folder, bucket, feed) `--rounds` times and a last folder run.
Each bucket or feed run is compared with the mean of the folder runs just before and after it;
it prints images/s of each and the median of those ratios (target >= 0.9).

    python benchmarks/bench_object_store.py listing --objects 100000
    python benchmarks/bench_object_store.py extraction --limit 384 --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASET = REPO.parent / "shared" / "datasets" / "clothing-small"
WORK = REPO / "bench-work" / "object-store"
BUCKET = "vasrch-bench"
LISTING_TARGET_S = 30.0
RATIO_TARGET = 0.9


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    listing = sub.add_parser("listing", help="rescan of an unchanged bucket")
    listing.add_argument("--objects", type=int, default=100_000, help="objects in the bucket")
    listing.add_argument("--repeat", type=int, default=3, help="timed rescans")
    extraction = sub.add_parser("extraction", help="bucket and feed against a local folder")
    extraction.add_argument("--limit", type=int, default=512, help="photos of clothing-small")
    extraction.add_argument("--rounds", type=int, default=3, help="folder, bucket, feed rounds")
    extraction.add_argument("dataset", nargs="?", type=Path, default=DATASET)
    return p.parse_args()


def upload_tiny_objects(store, prefix: str, count: int) -> float:
    """Seconds to put `count` tiny objects under `prefix`, unless they are there already."""
    fs = store.filesystem()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    have = len(fs.find(prefix)) if fs.exists(prefix) else 0
    if have == count:
        return 0.0
    start = time.perf_counter()
    batch = 2_000
    for first in range(have, count, batch):
        names = range(first, min(count, first + batch))
        fs.pipe({f"{prefix}/{i % 100:02d}/{i:07d}.jpg": b"tiny %d" % i for i in names})
    return time.perf_counter() - start


def listing(args: argparse.Namespace) -> None:
    from tests.object_store import seaweedfs
    from vasrch.catalog.scan import ScanOptions, scan_catalog
    from vasrch.catalog.sources import Fetching

    prefix = f"{BUCKET}/tiny-{args.objects}"
    with seaweedfs(WORK / "store") as store:
        upload_s = upload_tiny_objects(store, prefix, args.objects)
        record = WORK / f"listing-{args.objects}.parquet"
        record.unlink(missing_ok=True)
        options = ScanOptions(fetching=Fetching(store.storage_options, workers=32), record=record)
        url = f"s3://{prefix}"
        start = time.perf_counter()
        cold = scan_catalog(url, options=options)
        cold_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            warm = scan_catalog(url, options=options)
            times.append(time.perf_counter() - start)
    assert warm.table["sha256"].equals(cold.table["sha256"])
    best, worst = min(times), max(times)
    verdict = "met" if worst < LISTING_TARGET_S else "NOT met"
    print(f"objects        {len(warm.table)} in {url} (upload {upload_s:.1f} s; 0: already there)")
    print(f"load average   {os.getloadavg()[0]:.2f} (1 min)")
    print(f"cold scan      {cold_s:7.1f} s  (every object downloaded and hashed)")
    print(f"rescan         {best:7.1f} s best, {worst:.1f} s worst of {args.repeat}")
    print(f"target         < {LISTING_TARGET_S:.0f} s for an unchanged bucket: {verdict}")


def sample(dataset: Path, limit: int, folder: Path) -> Path:
    """A copy of the first `limit` photos of `dataset` (sorted), class folders kept."""
    from vasrch.catalog.scan import iter_image_files

    for src in iter_image_files(dataset)[:limit]:
        dst = folder / src.relative_to(dataset)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return folder


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without a log line per request."""

    def log_message(self, *args: object) -> None:
        pass


def serve_folder(stack: ExitStack, folder: Path) -> str:
    """A loopback web server for `folder` while `stack` is open; its base URL."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    return f"http://127.0.0.1:{server.server_address[1]}"


def extraction(args: argparse.Namespace) -> None:
    import pandas as pd

    from tests.object_store import seaweedfs, upload_folder
    from vasrch.catalog.scan import ScanOptions, scan_catalog
    from vasrch.catalog.sources import Fetching
    from vasrch.features.backbones import BackboneSpec, load_backbone
    from vasrch.features.extraction import extract_chunk, plan_chunks
    from vasrch.features.streamed import StreamedExtraction

    if not args.dataset.is_dir():
        sys.exit(f"dataset folder not found: {args.dataset}")
    backbone = load_backbone(BackboneSpec(), batch_size=32)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=WORK.parent)))
        folder = sample(args.dataset, args.limit, tmp / "catalog")
        store = stack.enter_context(seaweedfs(WORK / "store"))
        prefix = f"{BUCKET}/photos-{args.limit}"
        if not store.filesystem().exists(BUCKET):
            store.filesystem().mkdir(BUCKET)
        upload_folder(store, folder, prefix)
        base = serve_folder(stack, folder)
        ids = scan_catalog(folder).table["image_id"]
        manifest = tmp / "feed.csv"
        pd.DataFrame({"product_id": ids, "image": [f"{base}/{i}" for i in ids]}).to_csv(
            manifest, index=False
        )
        fetching = Fetching(store.storage_options)
        sources = {
            "folder": (folder, ScanOptions()),
            "bucket": (f"s3://{prefix}", ScanOptions(fetching=fetching)),
            "feed": (tmp, ScanOptions(manifest=manifest, fetching=fetching)),
        }

        def run(name: str) -> float:
            root, options = sources[name]
            cache = tmp / f"cache-{name}-{time.monotonic_ns()}"
            start = time.perf_counter()
            with StreamedExtraction(backbone, cache, 1024) as stream:
                scan = scan_catalog(root, options=options, on_bytes=stream.offer)
            done = sum(r.extracted for r in stream.results)
            for rows in plan_chunks(scan.table, cache, 1024):
                done += extract_chunk(rows, backbone, cache, fetching=fetching).extracted
            assert done == len(ids), (name, done)
            return done / (time.perf_counter() - start)

        run("folder")  # warm the model and the page cache
        rates: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(args.rounds):
            for name in ("folder", "bucket", "feed"):
                rates[name].append(run(name))
        rates["folder"].append(run("folder"))
    local = statistics.mean(rates["folder"])
    print(f"photos         {len(ids)} of {args.dataset}  CPUs {os.cpu_count()}")
    print(f"load average   {os.getloadavg()[0]:.2f} (1 min)")
    shown = ", ".join(f"{r:.1f}" for r in rates["folder"])
    print(f"folder         {local:7.1f} images/s  (scan + extraction; runs {shown})")
    for name in ("bucket", "feed"):
        # each run against the mean of the folder runs just before and after it
        ratios = [
            rate / statistics.mean(rates["folder"][i : i + 2]) for i, rate in enumerate(rates[name])
        ]
        ratio = statistics.median(ratios)
        verdict = "met" if ratio >= RATIO_TARGET else "NOT met"
        print(
            f"{name:<14} {statistics.mean(rates[name]):7.1f} images/s  ratio {ratio:.2f} median of "
            f"{', '.join(f'{r:.2f}' for r in ratios)} (target >= {RATIO_TARGET}: {verdict})"
        )


def main() -> None:
    args = parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    listing(args) if args.part == "listing" else extraction(args)


if __name__ == "__main__":
    main()
