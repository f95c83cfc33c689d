"""Catalogs in object storage and URL feeds: rescan speed of a large bucket, and extraction from
a bucket or a URL feed beside the same photos in a local folder.

Both parts run SeaweedFS with an identity (-s3.config: the test key), so it checks every
request's signature as a real store does (without one it takes any request unchecked).

`listing` uploads N tiny image-named objects to a SeaweedFS store kept in bench-work/ (once: a
later run finds them there), scans the bucket once cold (every object downloaded and hashed,
the listing record written), then times rescans of the unchanged bucket: listing + change
detection against the record (target: 100,000 objects < 30 s).

`extraction` takes the first N photos of clothing-small and runs scan + extraction (the same
calls the extract flow makes on the thread runner: scan_catalog feeding a StreamedExtraction,
then plan_chunks and extract_chunk for what is left), each run into a fresh cache: from the
local folder, from a bucket holding the same files, and from a manifest of their URLs on a
local web server (WEB_SERVER: http.server keeping connections open as a CDN does, a process of
its own as SeaweedFS is: a feed's server is another machine, and one inside this process would
take the GIL from extraction). One
untimed run of each warms the model, the page cache and the clients (the first bucket run of a
process creates s3fs's client: its rate is printed apart), then folder, bucket and
feed run interleaved `--rounds` times and a last folder run. Each bucket or feed run is compared
with the mean of the folder runs just before and after it; it prints images/s of each, every
ratio and their median (target: every ratio >= 0.9), the seconds the model waited for a
download (StreamedExtraction.waited_s), the CPU the servers spent per photo (they share the
machine's cores with extraction here, which a real store or feed server does not) and the CPU this
process spent per photo. `--weed-option` passes a setting to `weed server` (a store setting, not
vasrch's: e.g. -filer.saveToFilerLimit=65536 keeps photos under 64 KiB in the filer's store).

    python benchmarks/bench_object_store.py listing --objects 100000
    python benchmarks/bench_object_store.py extraction --limit 384 --rounds 3
    python benchmarks/bench_object_store.py extraction --limit 384 --rounds 3 \
        --weed-option=-filer.saveToFilerLimit=65536
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASET = REPO.parent / "shared" / "datasets" / "clothing-small"
WORK = REPO / "bench-work" / "object-store"
BUCKET = "vasrch-bench"
LISTING_TARGET_S = 30.0
RATIO_TARGET = 0.9
# A feed's server as a CDN runs one: HTTP/1.1, keeping connections open, and Nagle off (a file's
# headers and body leave in two writes: with Nagle, each answer on a kept-alive connection would
# wait 40 ms for the client's delayed ACK).
WEB_SERVER = """
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *args):
        pass
handler = functools.partial(Handler, directory=sys.argv[2])
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    listing = sub.add_parser("listing", help="rescan of an unchanged bucket")
    listing.add_argument("--objects", type=int, default=100_000, help="objects in the bucket")
    listing.add_argument("--repeat", type=int, default=3, help="timed rescans")
    extraction = sub.add_parser("extraction", help="bucket and feed against a local folder")
    extraction.add_argument("--limit", type=int, default=512, help="photos of clothing-small")
    extraction.add_argument("--rounds", type=int, default=3, help="folder, bucket, feed rounds")
    extraction.add_argument(
        "--weed-option",
        action="append",
        default=[],
        help="an option for `weed server` (a store setting, e.g. -filer.saveToFilerLimit=65536)",
    )
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


@contextmanager
def web_server(folder: Path) -> Iterator[tuple[str, int]]:
    """WEB_SERVER for `folder` on a loopback port: (its base URL, its pid)."""
    from tests.object_store import _answers, free_ports, stop

    (port,) = free_ports(1)
    process = subprocess.Popen(
        [sys.executable, "-c", WEB_SERVER, str(port), str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(base):
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the web server for {folder} did not start")
            time.sleep(0.1)
        yield base, process.pid
    finally:
        stop(process)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes `pids` (and their children) used so far."""
    import psutil

    total = 0.0
    for pid in pids:
        process = psutil.Process(pid)
        for p in [process, *process.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
    return total


def weed_pid() -> int:
    """The `weed server` this process started."""
    import psutil

    children = psutil.Process().children(recursive=True)
    return next(p.pid for p in children if p.name().startswith("weed"))


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
        store = stack.enter_context(seaweedfs(WORK / "store", options=args.weed_option))
        prefix = f"{BUCKET}/photos-{args.limit}"
        if not store.filesystem().exists(BUCKET):
            store.filesystem().mkdir(BUCKET)
        upload_folder(store, folder, prefix)
        base, web_pid = stack.enter_context(web_server(folder))
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
        servers = [weed_pid(), web_pid]
        waited: dict[str, list[float]] = {name: [] for name in sources}
        served: dict[str, list[float]] = {name: [] for name in sources}
        spent: dict[str, list[float]] = {name: [] for name in sources}

        def run(name: str) -> float:
            root, options = sources[name]
            cache = tmp / f"cache-{name}-{time.monotonic_ns()}"
            server_s = cpu_seconds(servers)
            own_s = time.process_time()
            start = time.perf_counter()
            with StreamedExtraction(backbone, cache, 1024) as stream:
                scan = scan_catalog(root, options=options, on_bytes=stream.offer)
            done = sum(r.extracted for r in stream.results)
            for rows in plan_chunks(scan.table, cache, 1024):
                done += extract_chunk(rows, backbone, cache, fetching=fetching).extracted
            assert done == len(ids), (name, done)
            rate = done / (time.perf_counter() - start)
            waited[name].append(stream.waited_s)
            served[name].append((cpu_seconds(servers) - server_s) / done)
            spent[name].append((time.process_time() - own_s) / done)
            return rate

        first = {name: run(name) for name in sources}  # warm-up, untimed
        rates: dict[str, list[float]] = {name: [] for name in sources}
        for name in sources:
            waited[name].clear()
            served[name].clear()
            spent[name].clear()
        for _ in range(args.rounds):
            for name in sources:
                rates[name].append(run(name))
        rates["folder"].append(run("folder"))
    local = statistics.mean(rates["folder"])
    print(f"photos         {len(ids)} of {args.dataset}  CPUs {os.cpu_count()}")
    print(f"load average   {os.getloadavg()[0]:.2f} (1 min)")
    print(f"store          SeaweedFS checking signatures {' '.join(args.weed_option)}")
    shown = ", ".join(f"{r:.1f}" for r in rates["folder"])
    print(f"folder         {local:7.1f} images/s  (scan + extraction; runs {shown})")
    print(f"{'':<14} this process's CPU {1e3 * statistics.mean(spent['folder']):.2f} ms a photo")
    for name in ("bucket", "feed"):
        # each run against the mean of the folder runs just before and after it
        ratios = [
            rate / statistics.mean(rates["folder"][i : i + 2]) for i, rate in enumerate(rates[name])
        ]
        verdict = "met" if min(ratios) >= RATIO_TARGET else "NOT met"
        print(
            f"{name:<14} {statistics.mean(rates[name]):7.1f} images/s  ratio "
            f"{statistics.median(ratios):.2f} median of {', '.join(f'{r:.2f}' for r in ratios)} "
            f"(target every run >= {RATIO_TARGET}: {verdict})"
        )
        print(
            f"{'':<14} model waited for downloads {max(waited[name]):.2f} s at most a run; "
            f"server CPU {1e3 * statistics.mean(served[name]):.2f} ms a photo; this process's "
            f"CPU {1e3 * statistics.mean(spent[name]):.2f} ms a photo"
        )
    print(
        f"first runs     bucket {first['bucket']:.1f}, feed {first['feed']:.1f} images/s "
        f"(untimed warm-up after a folder run at {first['folder']:.1f}; the first bucket run "
        f"creates s3fs's client)"
    )


def main() -> None:
    args = parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    listing(args) if args.part == "listing" else extraction(args)


if __name__ == "__main__":
    main()
