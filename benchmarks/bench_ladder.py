"""The backbone ladder (issue 23): EfficientNet-Lite0, Lite1 and Lite2 with cheap retrieval steps.

clothing-small's train folder is the catalog (3,068 photos), its test folder the held-out queries
(372 photos). For each backbone the photos are decoded as the pipeline decodes them (PIL
bilinear to the network's input size, and to that size / sqrt(2) for the second scale) and the
last feature map is pooled several ways at once. The query photos (the 372 test photos, and the
600 train photos of the validation split) are also embedded mirrored. Steps:

- pooling: avg, GeM p = 1.5 ... 4 (`features.pooling`, `features.gem_p`), R-MAC (Tolias et al.:
  max over the whole map and 2 x 2 and 3 x 3 overlapping regions, each normalised, summed) and
  R-GeM (the same regions with GeM 3);
- mirrored queries: a query's vector is the normalised sum of its photo's and its mirror image's;
- two scales: every vector (catalog and query) is the normalised sum of the image's at the
  network's input size and at 1/sqrt(2) of it.

Every setting is searched as a run searches (fit_index with the default centring, database
augmentation and query expansion). Choices are made on a validation split of the catalog alone
(600 train photos as queries against the other 2,468, exact search); the test photos are only
measured afterwards: today's default, each step alone and the validation-best combination, with
held-out precision@10 and recall@10 at the probes calibrated on them, at k suggested by the
default sweep, and the probes a run calibrates without them.

Then, in the same process: images/s through the extraction pipeline (scan, decode threads,
backbone, prints, Parquet shards; fresh cache) for each backbone on IMAGES photos, Lite0 measured
first and last so the machine's load is seen; and the warm single-query time (decode + embed +
search at the calibrated probes, one photo at a time as the query service answers).

    python benchmarks/bench_ladder.py                       # clothing-small, bench-work/ladder
    python benchmarks/bench_ladder.py DATASET --work DIR --only-embed
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from vasrch.features.backbones import BackboneSpec

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small"
WORK = ROOT / "bench-work" / "ladder"
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
GEM_PS = (1.5, 2.0, 2.5, 3.0, 4.0)
POOLINGS = ("avg", *(f"gem{p:g}" for p in GEM_PS), "rmac", "rgem3")
SCALES = {"s1": 1.0, "s0.71": 2**-0.5}
VALIDATION_QUERIES = 600
BATCH = 32
THROUGHPUT_IMAGES = 256
LATENCY_QUERIES = 50
LATENCY_ROUNDS = 2
SPEED = (
    BackboneSpec("efficientnet_lite0", pooling="avg"),
    BackboneSpec("efficientnet_lite0", pooling="rgem"),
    BackboneSpec("efficientnet_lite2", pooling="rgem"),
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="clothing-small folder")
    p.add_argument("--work", type=Path, default=WORK, help="descriptor cache (kept)")
    p.add_argument("--only-embed", action="store_true", help="compute the descriptors and stop")
    p.add_argument("--skip-speed", action="store_true", help="no throughput or latency")
    p.add_argument("--speed-only", action="store_true", help="throughput and latency only")
    p.add_argument("--mirror-latency", action="store_true", help="also time mirrored queries")
    p.add_argument(
        "--backbones", nargs="+", default=list(BACKBONES), help="backbones of the quality rows"
    )
    return p.parse_args()


def photos(folder: Path) -> list[str]:
    """Image ids (class/name) of a folder, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.jpg"))


def pooled(fmap: np.ndarray) -> dict[str, np.ndarray]:
    """avg, GeM-p, R-MAC (regional max) and R-GeM (regional GeM 3) pooling of (n, h, w, c)
    feature maps, as `features.pooling` avg, gem, rmac and rgem pool them (the regions of
    vasrch.features.backbones.pooling; regional vectors normalised, summed, the sum normalised)."""
    out = {"avg": fmap.mean(axis=(1, 2))}
    clipped = np.maximum(fmap, 1e-6).astype(np.float64)
    for p in GEM_PS:
        out[f"gem{p:g}"] = (clipped**p).mean(axis=(1, 2)) ** (1 / p)
    from vasrch.features.backbones.pooling import regions

    boxes = regions(*fmap.shape[1:3])
    rmac = sum(unit(fmap[:, y0:y1, x0:x1].max(axis=(1, 2))) for y0, y1, x0, x1 in boxes)
    cube = clipped**3
    rgem = sum(unit(cube[:, y0:y1, x0:x1].mean(axis=(1, 2)) ** (1 / 3)) for y0, y1, x0, x1 in boxes)
    out["rmac"], out["rgem3"] = unit(rmac), unit(rgem)
    return {k: v.astype(np.float32) for k, v in out.items()}


def descriptors(
    work: Path, backbone: str, folder: Path, ids: list[str], mirrored: bool, scale: str, tag: str
) -> dict[str, np.ndarray]:
    """Pooled descriptors of `ids` (cached in `work`) with the image side times SCALES[scale],
    of the mirror images when asked."""
    kind = "mirrored" if mirrored else "plain"
    path = work / f"{backbone}-{tag}-{kind}-{scale}.npz"
    if path.is_file():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    from vasrch.catalog.images import decode_image
    from vasrch.features.backbones.efficientnet_lite import VARIANTS, build_efficientnet_lite

    model = build_efficientnet_lite(backbone, include_top=False, weights="imagenet")
    size = round(VARIANTS[backbone].input_size * SCALES[scale])
    parts: dict[str, list[np.ndarray]] = {}
    start = time.perf_counter()
    for first in range(0, len(ids), BATCH):
        names = ids[first : first + BATCH]
        batch = np.stack([decode_image(folder / i, size).pixels for i in names])
        if mirrored:
            batch = batch[:, :, ::-1]
        fmap = np.asarray(model.predict_on_batch(batch.astype(np.float32)))
        for k, v in pooled(fmap).items():
            parts.setdefault(k, []).append(v)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    work.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    rate = len(ids) / (time.perf_counter() - start)
    load = os.getloadavg()[0]
    print(f"  {backbone} {tag} {kind} {scale}: {rate:.1f}/s (load {load:.1f})", file=sys.stderr,
          flush=True)  # fmt: skip
    return out


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Setting:
    """One way of making vectors: pooling, mirrored queries, scales."""

    pooling: str = "avg"
    mirror: bool = False
    scales: tuple[str, ...] = ("s1",)

    def label(self) -> str:
        steps = [self.pooling, *(["mirrored"] if self.mirror else [])]
        steps += ["2 scales"] if len(self.scales) > 1 else []
        return " + ".join(steps)


GRID = [
    Setting(pooling, mirror, scales)
    for pooling in POOLINGS
    for mirror in (False, True)
    for scales in (("s1",), tuple(SCALES))
]


class Data:
    """Descriptors of one backbone at every scale: catalog (train), its validation split, test
    queries, plain and mirrored."""

    def __init__(self, work: Path, backbone: str, dataset: Path) -> None:
        self.train_ids = photos(dataset / "train")
        self.test_ids = photos(dataset / "test")
        order = np.random.default_rng(0).permutation(len(self.train_ids))
        self.val_rows, self.kept_rows = order[:VALIDATION_QUERIES], order[VALIDATION_QUERIES:]
        val_ids = [self.train_ids[i] for i in self.val_rows]
        train, test = dataset / "train", dataset / "test"
        self.sets: dict[tuple[str, bool, str], dict[str, np.ndarray]] = {}
        for scale in SCALES:
            for name, folder, ids, mirrored in (
                ("train", train, self.train_ids, False),
                ("test", test, self.test_ids, False),
                ("test", test, self.test_ids, True),
                ("validation", train, val_ids, True),
            ):
                self.sets[name, mirrored, scale] = descriptors(
                    work, backbone, folder, ids, mirrored, scale, name
                )
        self.train_classes = np.array([i.split("/")[0] for i in self.train_ids], dtype=object)
        self.test_classes = np.array([i.split("/")[0] for i in self.test_ids], dtype=object)

    def vectors(self, name: str, pooling: str, mirror: bool, scales: tuple[str, ...], rows=None):
        """Unit vectors of a set: the normalised sum over `scales` of each scale's unit vector
        (plus its mirror image's when `mirror`)."""
        total = 0.0
        for scale in scales:
            kinds = (False, True) if mirror else (False,)
            for mirrored in kinds:
                if name == "validation" and not mirrored:
                    part = self.sets["train", False, scale][pooling][self.val_rows]
                else:
                    part = self.sets[name, mirrored, scale][pooling]
                total = total + unit(part if rows is None else part[rows])
        return unit(total)

    def split(self, setting: Setting, test: bool):
        """(catalog ids, catalog vectors, catalog classes, queries, query classes)."""
        rows = slice(None) if test else self.kept_rows
        ids = np.array(self.train_ids, dtype=object)[rows]
        catalog = self.vectors("train", setting.pooling, False, setting.scales, rows)
        name = "test" if test else "validation"
        queries = self.vectors(name, setting.pooling, setting.mirror, setting.scales)
        qclasses = self.test_classes if test else self.train_classes[self.val_rows]
        return ids, catalog, self.train_classes[rows], queries, qclasses


def validation_p10(data: Data, setting: Setting) -> float:
    """Exact-search precision@10 with the default search steps on the validation split."""
    from vasrch.config import ClusteringConfig
    from vasrch.index.evaluation import precision_at_k
    from vasrch.index.training import fit_index

    ids, catalog, classes, queries, qclasses = data.split(setting, test=False)
    index, _ = fit_index(ids, catalog, 1, "bench", ClusteringConfig())
    answers = index.exact().search(queries, 10)
    return precision_at_k(answers, qclasses, pd.Series(classes, index=ids), 10)


def test_figures(data: Data, setting: Setting) -> dict[str, float]:
    """Held-out figures as a run measures them, and the probes calibrated without them."""
    from vasrch.config import ClusteringConfig, EvaluationConfig, SearchConfig
    from vasrch.index.training import HeldOut, diagnose, evaluate_index, fit_index

    ids, catalog, classes, queries, qclasses = data.split(setting, test=True)
    labels = pd.Series(classes, index=ids)
    qids = np.array(data.test_ids, dtype=object)
    held = HeldOut(qids, queries, pd.Series(qclasses, index=qids))
    k = diagnose(catalog, ClusteringConfig().diagnostics).suggested_k
    index, _ = fit_index(ids, catalog, k, "bench", ClusteringConfig())
    search, evaluation = SearchConfig(), EvaluationConfig()
    fig = evaluate_index(index, ids, catalog, labels, search, evaluation, held).figures()
    without = evaluate_index(index, ids, catalog, labels, search, evaluation).figures()
    at_those = evaluate_index(
        index,
        ids,
        catalog,
        labels,
        SearchConfig(probes=int(without["probes"])),
        EvaluationConfig(sample=10),
        held,
    ).figures()
    return {
        "k": k,
        "exact p@10": fig["held_out_exact_precision_at_10"],
        "p@10": fig["held_out_precision_at_10"],
        "recall@10": fig["held_out_recall_at_10"],
        "probes": int(fig["probes"]),
        "probes (no held-out)": int(without["probes"]),
        "recall at those": at_those["held_out_recall_at_10"],
    }


def pipeline_rate(spec: BackboneSpec, dataset: Path, ids: list[str]) -> float:
    """Images/s of the extraction pipeline (fresh cache) on `ids`."""
    import shutil

    from vasrch.catalog.scan import scan_catalog
    from vasrch.features.backbones import fingerprint, load_backbone
    from vasrch.features.extraction import cache_dir_for, extract_chunk, plan_chunks

    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        folder = Path(tmp) / "catalog"
        for i in ids:
            (folder / i).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(dataset / "train" / i, folder / i)
        backbone_ = load_backbone(spec)
        catalog = scan_catalog(folder).table
        cache = cache_dir_for(Path(tmp) / "ws", fingerprint(spec))
        start = time.perf_counter()
        for chunk in plan_chunks(catalog, cache, 1024):
            extract_chunk(chunk, backbone_, cache)
        return len(ids) / (time.perf_counter() - start)


def latency_ms(spec: BackboneSpec, dataset: Path, probes: int, mirror: bool) -> np.ndarray:
    """Warm single-query times (decode + embed, mirrored too when asked, + search) against an
    index of random unit vectors as large as the catalog (k = 76, as the sweep suggests)."""
    from threadpoolctl import threadpool_limits

    from vasrch.catalog.images import decode_image
    from vasrch.config import ClusteringConfig
    from vasrch.features.backbones import load_backbone
    from vasrch.index.training import fit_index

    test_ids = photos(dataset / "test")
    ids = np.array(photos(dataset / "train"), dtype=object)
    catalog = unit(np.random.default_rng(0).normal(size=(len(ids), 1280)).astype(np.float32))
    index, _ = fit_index(ids, catalog, 76, "bench", ClusteringConfig())
    model = load_backbone(spec, batch_size=2 if mirror else 1)
    size = model.spec.input_size
    times = []
    with threadpool_limits(1, "blas"):
        for i in [test_ids[0], *test_ids[:LATENCY_QUERIES]]:
            start = time.perf_counter()
            pixels = decode_image(dataset / "test" / i, size).pixels
            batch = np.stack([pixels, pixels[:, ::-1]]) if mirror else pixels[None]
            vectors = model.embed(batch)
            query = unit(vectors.sum(axis=0, keepdims=True))
            index.search(query, 10, probes)
            times.append((time.perf_counter() - start) * 1000)
    return np.array(times[1:])  # the first warms up


def one_step_settings(best_gem: str) -> list[Setting]:
    """Today's default, and each step alone on top of it (GeM at its validation-best p)."""
    base = Setting()
    return [
        base,
        replace(base, pooling=best_gem),
        replace(base, mirror=True),
        replace(base, scales=tuple(SCALES)),
        replace(base, pooling="rmac"),
        replace(base, pooling="rgem3"),
    ]


def quality(args: argparse.Namespace) -> None:
    """Descriptors, the validation grid, and the held-out figures of the chosen settings."""
    datas = {b: Data(args.work, b, args.dataset) for b in args.backbones}
    if args.only_embed:
        return
    rows = [
        {"backbone": b, "setting": st, "label": st.label(), "val p@10": validation_p10(d, st)}
        for b, d in datas.items()
        for st in GRID
    ]
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_rows", 500)
    fmt = {"float_format": lambda v: f"{v:.4f}", "index": False}
    print("validation split of train (600 queries, exact search, default search steps)")
    print(table.pivot_table("val p@10", "label", "backbone").round(4).to_string())
    gem = table[table["label"].str.fullmatch(r"gem[0-9.]+")]
    best_gem = gem.loc[gem.groupby("backbone")["val p@10"].idxmax()]
    best = table.loc[table.groupby("backbone")["val p@10"].idxmax()]
    print(
        "best GeM p per backbone:\n" + best_gem[["backbone", "label", "val p@10"]].to_string(**fmt)
    )
    print("best per backbone:\n" + best[["backbone", "label", "val p@10"]].to_string(**fmt))
    chosen = []
    for backbone in datas:
        gem_pooling = best_gem.loc[best_gem["backbone"] == backbone, "setting"].item().pooling
        top = best.loc[best["backbone"] == backbone, "setting"].item()
        chosen += [(backbone, st) for st in [*one_step_settings(gem_pooling), top]]
    test_rows = []
    for backbone, setting in dict.fromkeys(chosen):
        figures = test_figures(datas[backbone], setting)
        test_rows.append({"backbone": backbone, "setting": setting.label(), **figures})
        print(f"  tested {backbone} {setting.label()}", file=sys.stderr, flush=True)
    print("held-out test photos (372), index at the suggested k")
    print(pd.DataFrame(test_rows).to_string(**fmt))


def speed(dataset: Path, mirror: bool) -> None:
    """Pipeline images/s of each SPEED setting (the first measured first and last), then warm
    single-query times, LATENCY_ROUNDS rounds of LATENCY_QUERIES queries per setting in turn."""
    print(f"load average before speed {os.getloadavg()}")
    train_ids = photos(dataset / "train")
    sample = train_ids[:: len(train_ids) // THROUGHPUT_IMAGES][:THROUGHPUT_IMAGES]
    for spec in (*SPEED, SPEED[0]):
        rate = pipeline_rate(spec, dataset, sample)
        print(f"pipeline {spec.name} {spec.pooling}: {rate:.1f} images/s "
              f"(load {os.getloadavg()[0]:.2f})")  # fmt: skip
    times: dict[tuple[BackboneSpec, bool], list[np.ndarray]] = {}
    for _ in range(LATENCY_ROUNDS):  # interleaved, so that each setting sees the same load
        for spec in SPEED:
            for mirrored in (False, True) if mirror else (False,):
                times.setdefault((spec, mirrored), []).append(
                    latency_ms(spec, dataset, 8, mirrored)
                )
    for (spec, mirrored), parts in times.items():
        t = np.concatenate(parts)
        print(
            f"warm query {spec.name} {spec.pooling} mirrored={mirrored}: "
            f"p50 {np.percentile(t, 50):.1f} ms, p95 {np.percentile(t, 95):.1f} ms "
            f"(load {os.getloadavg()[0]:.2f})"
        )


def main() -> int:
    args = parse_args()
    if not args.dataset.is_dir():
        print(f"dataset not found: {args.dataset}", file=sys.stderr)
        return 2
    if not args.speed_only:
        quality(args)
    if not (args.skip_speed or args.only_embed):
        speed(args.dataset, args.mirror_latency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
