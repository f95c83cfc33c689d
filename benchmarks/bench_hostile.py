"""A hostile catalog (target: one run extracts every good photo, reports every bad one with its
reason, and a second run adds nothing).

1,000 clothing-small photos are copied into a fresh catalog, then tests/hostile.py adds one of
each hostile entry (non-UTF-8 name, unreadable file and folder, 1.5 GB sparse JPEG, path past
PATH_MAX, dangling, looping and external symlinks, folder loop, FIFO, truncated JPEG). The
extract flow runs in a child process that file permissions stop (root drops its read override
with setpriv): first on the 1,000 photos alone (fresh workspace: the baseline), then twice on
the hostile catalog (fresh workspace). Each line gives the wall time, the counts and the
child's peak RSS; the run fails if a good photo is missing or a bad one is not reported.

    python benchmarks/bench_hostile.py
    python benchmarks/bench_hostile.py --photos 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/hostile.py builds the hostile entries

from tests.hostile import (  # noqa: E402
    assert_reported,
    extract_without_read_override,
    unlock,
    write_hostile_files,
)

DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small" / "train"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="folder of photos")
    p.add_argument("--photos", type=int, default=1000, help="good photos in the catalog")
    return p.parse_args()


def catalog_of(dataset: Path, folder: Path, n: int) -> int:
    """Copy the first n photos of `dataset` (sorted) into `folder`, keeping class folders."""
    photos = sorted(p for p in dataset.rglob("*.jpg") if p.is_file())[:n]
    for p in photos:
        target = folder / p.relative_to(dataset)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    return len(photos)


def config_for(tmp: Path, catalog: Path, workspace: str) -> Path:
    path = tmp / f"{workspace}.yaml"
    path.write_text(yaml.safe_dump({"catalog": {"path": str(catalog)}, "workspace": workspace}))
    return path


def line(label: str, result: dict, seconds: float) -> str:
    return (
        f"{label:<22} {seconds:6.1f} s  seen {result['seen']:5d}  new {result['new']:5d}  "
        f"reused {result['reused']:5d}  rejected {result['rejected']:3d}  "
        f"warnings {len(result['warnings'])}  peak RSS {result['peak_rss_mb']:6.0f} MiB"
    )


def main() -> None:
    args = parse_args()
    if not args.dataset.is_dir():
        raise SystemExit(f"{args.dataset} not found; pass the folder of photos")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="vasrch-hostile-") as name:
        tmp = Path(name)
        clean, hostile = tmp / "clean", tmp / "hostile"
        n = catalog_of(args.dataset, clean, args.photos)
        shutil.copytree(clean, hostile)
        expected = write_hostile_files(hostile, tmp / "outside")
        try:
            base, base_s = extract_without_read_override(config_for(tmp, clean, "ws-clean"), 3600)
            first, first_s = extract_without_read_override(config_for(tmp, hostile, "ws"), 3600)
            second, second_s = extract_without_read_override(config_for(tmp, hostile, "ws"), 3600)
        finally:
            unlock(hostile)
        assert base["new"] == n and base["rejected"] == 0
        assert_reported(first, expected)
        assert (first["new"], first["rejected"]) == (n, len(expected.rejected))
        assert_reported(second, expected)
        assert (second["new"], second["reused"]) == (0, n)
        print(
            f"load average {os.getloadavg()[0]:.1f}; {n} good photos, {len(expected.rejected)} "
            f"rejected and {len(expected.warned)} folder warnings expected"
        )
        print(line("good photos only", base, base_s))
        print(line("hostile, first run", first, first_s))
        print(line("hostile, second run", second, second_s))
        for r in first["rejections"]:
            retry = "retried" if r["retry"] else "kept rejected"
            image_id = r["image_id"] if len(r["image_id"]) <= 40 else r["image_id"][:20] + "..."
            print(f"  rejected {image_id:<40} {retry:<13} {r['reason'][:110]}")
        for w in first["warnings"]:
            print(f"  warning  {w}")


if __name__ == "__main__":
    main()
