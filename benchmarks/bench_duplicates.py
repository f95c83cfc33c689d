"""Near-duplicate detection on real photos with planted listing edits: vasrch against pHash/dHash.

The catalog is every clothing-small photo (train, validation and test: 3,781) less the real
duplicates checked by eye (`REAL_DUPLICATES`: the same photo filed under two classes; the second
copy is left out), plus edited copies: `--bases` photos drawn at random (seeded) each get two
different edits of tests/listing_edits.py `KINDS`, each with a random strength within the issue's
ranges (resize to 50-90%, JPEG quality 30-60, crops of 0-10% of each side, mirror, brightness and
contrast +-10-20%, a text line or a shop logo, a 1-5% white, black or grey border, padding to a
white square). With the default 1,500 bases each kind is planted on about 300 photos.

Planted pairs: (original, edit) and (edit, edit) of the same original, three per base. A found
pair counts as true only if it is planted; everything else, including two photos of the same
garment taken separately, is a false positive.

- vasrch: the train flow at its defaults on the whole catalog (extraction, k sweep, KMeans,
  calibrated probes, bulk top-10 with duplicate scores, groups at bulk.duplicate_threshold). A
  group puts forward every pair of its members, as a merchandiser acting on it would merge them
  all. "pairs >= t" is the same at pair level (neighbour pairs whose duplicate score is at least
  t), "cosine >= 0.95 + components" the grouping before duplicate prints (pooled cosine, groups
  as connected components).
- pHash and dHash (imagehash, 64 bits) over every pair of the catalog, at Hamming distances up
  to 4, 8 and 10 (10 is the cut-off most guides give for "same picture"; 4 a strict one).

Last, the cost of duplicate scoring: every scored neighbour pair of the run (each image's
`bulk.duplicate_candidates` nearest) scored again on one thread (CPU time), per pair, and what
that makes for a catalog of a million images on 2 cores.

    python benchmarks/bench_duplicates.py                       # clothing-small, temp workspace
    python benchmarks/bench_duplicates.py DATASET --workspace WS --bases 1500 --seed 0
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import yaml
from PIL import Image

if TYPE_CHECKING:
    from vasrch.orchestration.flows.train import TrainResult

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "shared" / "datasets" / "clothing-small"
WORKSPACE = Path(tempfile.gettempdir()) / "vasrch-bench-duplicates"
REAL_DUPLICATES = {
    # left out -> the photo it duplicates (pHash and dHash distance 0, print score 0.998)
    "train/skirt/637a56e4-7fa6-4f75-8859-0f8902461554.jpg": (
        "train/shorts/6075b4a5-5b1a-4ce0-aea0-9dbfbca7c35c.jpg"
    ),
}
SWEEP = (0.90, 0.91, 0.92, 0.93, 0.94, 0.945, 0.95, 0.955, 0.96, 0.97)
HASH_CUTS = (4, 8, 10)
Pair = tuple[str, str]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="clothing-small folder")
    p.add_argument("--workspace", type=Path, default=WORKSPACE, help="catalog, cache and runs")
    p.add_argument("--bases", type=int, default=1500, help="photos that get two edits each")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def build_catalog(dataset: Path, folder: Path, bases: int, seed: int) -> dict[str, tuple]:
    """Copy the photos and write the edited copies into `folder`; return edit id -> (original
    id, kind)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.listing_edits import KINDS, jpeg_bytes, random_edit

    originals = sorted(
        p.relative_to(dataset).as_posix()
        for p in dataset.rglob("*.jpg")
        if p.relative_to(dataset).as_posix() not in REAL_DUPLICATES
    )
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(originals), size=bases, replace=False).tolist())
    planted: dict[str, tuple] = {}
    for image_id in originals:
        target = folder / image_id
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dataset / image_id, target)
    for i in chosen:
        original = originals[i]
        photo = Image.open(dataset / original).convert("RGB")
        for kind in rng.choice(KINDS, size=2, replace=False).tolist():
            image_id = f"edits/{original[:-4]}~{kind}.jpg"
            data = jpeg_bytes(*random_edit(photo, kind, rng))
            (folder / image_id).parent.mkdir(parents=True, exist_ok=True)
            (folder / image_id).write_bytes(data)
            planted[image_id] = (original, kind)
    return planted


def planted_pairs(planted: dict[str, tuple]) -> set[Pair]:
    """(original, edit) and (edit, edit) pairs of the same original, each sorted."""
    copies: dict[str, list[str]] = {}
    for edit, (original, _) in planted.items():
        copies.setdefault(original, [original]).append(edit)
    return {
        tuple(sorted(pair))
        for members in copies.values()
        for pair in itertools.combinations(members, 2)
    }


def group_pairs(groups: pd.DataFrame) -> set[Pair]:
    """Every pair of members of every group, each sorted."""
    return {
        tuple(sorted(pair))
        for _, members in groups.groupby("group_id")["image_id"]
        for pair in itertools.combinations(members.tolist(), 2)
    }


def scored(name: str, found: set[Pair], truth: set[Pair]) -> dict[str, object]:
    hits = len(found & truth)
    return {
        "method": name,
        "pairs found": len(found),
        "true": hits,
        "false": len(found) - hits,
        "precision": hits / len(found) if found else 1.0,
        "recall": hits / len(truth),
    }


def mixed_groups(groups: pd.DataFrame, planted: dict[str, tuple]) -> int:
    """Groups with a member that is not a copy of the same original as the representative."""
    origin = groups["image_id"].map(lambda i: planted.get(i, (i,))[0])
    rep_origin = (
        origin.where(groups["is_representative"]).groupby(groups["group_id"]).transform("first")
    )
    return int(groups.loc[origin != rep_origin, "group_id"].nunique())


def train_run(catalog_dir: Path, workspace: Path) -> tuple[TrainResult, float]:
    """The train flow at its defaults on the catalog; (result, seconds)."""
    from vasrch.orchestration.flows.train import train_flow

    config = workspace / "bench.yaml"
    config.write_text(yaml.safe_dump({"catalog": {"path": str(catalog_dir)}, "workspace": "ws"}))
    start = time.perf_counter()
    result = train_flow(str(config))
    return result, time.perf_counter() - start


def cosine_components(folder, threshold: float) -> set[Pair]:
    """Pairs of the old grouping: neighbours with pooled cosine >= threshold, joined as
    connected components."""
    import pyarrow.dataset as ds
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    hits = (
        ds.dataset(folder.neighbour_shards(), format="parquet")
        .to_table(columns=["image_id", "neighbour_id"], filter=ds.field("score") >= threshold)
        .to_pandas()
    )
    codes, nodes = pd.factorize(pd.concat([hits["image_id"], hits["neighbour_id"]]))
    m = len(hits)
    graph = coo_matrix((np.ones(m), (codes[:m], codes[m:])), shape=(len(nodes), len(nodes)))
    _, component = connected_components(graph, directed=False)
    groups = pd.DataFrame({"group_id": component, "image_id": np.asarray(nodes)})
    return group_pairs(groups)


def hash_pairs(paths: pd.Series, kind: str, cuts: tuple[int, ...]) -> dict[int, set[Pair]]:
    """Pairs of catalog images whose 64-bit hash differs in at most `cut` bits, for each cut."""
    import imagehash

    fn = {"pHash": imagehash.phash, "dHash": imagehash.dhash}[kind]
    bits = np.stack([fn(Image.open(p)).hash.ravel() for p in paths])
    packed = np.packbits(bits.astype(np.uint8), axis=1).view(">u8").ravel()
    ids = paths.index.to_numpy()
    found: dict[int, set[Pair]] = {cut: set() for cut in cuts}
    for start in range(0, len(packed), 256):
        block = packed[start : start + 256, None] ^ packed[None, :]
        distance = np.unpackbits(block.view(np.uint8), axis=-1).reshape(*block.shape, 64).sum(-1)
        for cut in cuts:
            for i, j in zip(*np.nonzero(distance <= cut), strict=True):
                if start + i < j:
                    found[cut].add(tuple(sorted((ids[start + i], ids[j]))))
    return found


def scoring_cost(run) -> tuple[int, float]:
    """(unique scored neighbour pairs, CPU microseconds per pair) of scoring the run's prints
    again on one thread."""
    from threadpoolctl import threadpool_limits

    from vasrch.features.print_similarity import print_scores
    from vasrch.index.search_index import load_index

    index = load_index(run.index.root)
    table = pd.concat(pd.read_parquet(p) for p in run.bulk.neighbour_shards())
    table = table[table["duplicate_score"].notna()]  # the bulk.duplicate_candidates nearest
    a = index.rows_of(table["image_id"].tolist())
    b = index.rows_of(table["neighbour_id"].tolist())
    pairs = np.unique(np.sort(np.stack([a, b], axis=1), axis=1), axis=0)
    with threadpool_limits(1):
        start = time.process_time()
        print_scores(index.prints, pairs[:, 0], pairs[:, 1])
        seconds = time.process_time() - start
    return len(pairs), seconds / len(pairs) * 1e6


def main() -> None:
    args = parse_args()
    from vasrch.config import BulkConfig
    from vasrch.duplicates.groups import duplicate_groups, read_duplicate_pairs
    from vasrch.layout import RunLayout

    default = BulkConfig().duplicate_threshold
    args.workspace.mkdir(parents=True, exist_ok=True)
    # absolute: the run's config, written inside the workspace, names the catalog by this path
    catalog_dir = args.workspace.resolve() / f"catalog-{args.bases}-{args.seed}"
    start = time.perf_counter()
    planted = build_catalog(args.dataset, catalog_dir, args.bases, args.seed)
    truth = planted_pairs(planted)
    kinds = Counter(kind for _, kind in planted.values())
    print(
        f"catalog {catalog_dir}: {len(planted)} edited copies of {args.bases} photos "
        f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); {len(truth)} planted "
        f"pairs; {len(REAL_DUPLICATES)} real duplicate left out; "
        f"{time.perf_counter() - start:.0f} s"
    )
    result, seconds = train_run(catalog_dir, args.workspace)
    run = RunLayout(result.run_dir)
    catalog = pd.read_parquet(run.catalog, columns=["image_id", "path"])
    ids_order = catalog["image_id"].tolist()
    print(
        f"train flow: {seconds:.0f} s for {len(catalog)} images (extraction "
        f"{result.extract.images_per_s:.2f} images/s; k={result.manifest.k}, probes "
        f"{result.manifest.calibration.probes}); bulk: "
        f"{result.manifest.bulk.duplicate_groups} groups"
    )

    rows = []
    for t in sorted({*SWEEP, default}):
        pairs = read_duplicate_pairs(run.bulk, t)
        groups = duplicate_groups(pairs, ids_order)
        row = scored(
            f"vasrch groups >= {t}{' (default)' if t == default else ''}",
            group_pairs(groups),
            truth,
        )
        rows.append(row | {"mixed groups": mixed_groups(groups, planted)})
        if t == default:
            at_default = groups
            raw = {tuple(sorted(p)) for p in pairs[["a", "b"]].itertuples(index=False)}
    rows.append(scored(f"vasrch pairs >= {default}", raw, truth))
    rows.append(scored("cosine >= 0.95 + components", cosine_components(run.bulk, 0.95), truth))
    paths = catalog.set_index("image_id")["path"]
    for kind in ("pHash", "dHash"):
        for cut, found in hash_pairs(paths, kind, HASH_CUTS).items():
            rows.append(scored(f"{kind} distance <= {cut}", found, truth))
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    found = group_pairs(at_default)
    by_kind = []
    for kind in sorted(kinds):
        mine = {tuple(sorted((o, e))) for e, (o, k) in planted.items() if k == kind}
        by_kind.append(
            {"edit": kind, "planted": len(mine), "recall": len(mine & found) / len(mine)}
        )
    print(f"recall of (original, edit) pairs by edit, vasrch groups >= {default}:")
    print(pd.DataFrame(by_kind).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    false = sorted(found - truth)[:20]
    if false:
        print("false pairs at the default (first 20):")
        for a, b in false:
            print(f"  {a}  {b}")
    pairs, micros = scoring_cost(run)
    per_image = pairs / len(catalog)
    print(
        f"duplicate scoring: {pairs} unique scored pairs ({per_image:.1f} per image), "
        f"{micros:.1f} us CPU per pair on one thread; 1M images at that rate: "
        f"{1e6 * per_image * micros / 1e6 / 2:.0f} s on 2 cores"
    )


if __name__ == "__main__":
    main()
