"""Calibration without held-out photos against new photos (issue 23), per catalog shape.

A run without `evaluation.queries` calibrates its probes on sampled catalog photos (each without
the catalog photos at least 0.8 similar to it) and, since issue 23, on simulated shopper photos
of catalog photos (vasrch.features.shopper_photos, `evaluation.simulated_queries`). This script
builds several catalogs from a dataset folder (train/ and test/, clothing-small by default),
calibrates as such a run does, without and with the simulated photos, and measures recall@10
against exact search on new photos at the probes chosen:

- full: the train folder (one photo a product); new photos: the test photos;
- full, unlike: the same catalog; new photos: the test photos taken very unlike the catalog
  (grey, at a third of the resolution, shrunk to half on a striped background, off-centre), a
  change the simulation does not make;
- 4 shots: 15 train photos a class with 3 more shots each (crop, mirrored recolouring,
  smaller copy: tests/imagefactory.product_shots); new photos: the test photos;
- small: 500 sampled train photos; new photos: the test photos.

Index as a run builds it (default search steps, k suggested by the default sweep); the backbone
is the default (EfficientNet-Lite0 with regional GeM), or --backbone. "held-out probes" is what
calibrating on the new photos themselves would choose; "before": catalog photos alone;
"hardest F" columns: with the simulated photos too, the probes chosen when they must also reach
the target on the fraction F of the simulated photos farthest from every cluster centre
(`evaluation.simulated_hardest`; 1: all alike, as before issue 23's margin), and the new
photos' recall at them.

--validation measures on the train folder alone, for choices (bench_ladder.py's split): the
catalogs are built from the train photos less 600 validation photos, which are the new photos.

    python benchmarks/bench_calibration.py                  # clothing-small, bench-work/calibration
    python benchmarks/bench_calibration.py --validation
    python benchmarks/bench_calibration.py bench-work/fashion-mnist \\
        --work bench-work/calibration-fashion
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small"
WORK = ROOT / "bench-work" / "calibration"
LADDER = ROOT / "bench-work" / "ladder"
SHOT_PRODUCTS = 15  # per class

sys.path.insert(0, str(ROOT))  # tests/imagefactory.py draws the products' other shots
from tests.imagefactory import product_shots  # noqa: E402

SMALL = 500
VALIDATION_QUERIES = 600  # as bench_ladder.py
HARDEST = (1.0, 0.5, 0.25, 0.1)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="clothing-small folder")
    p.add_argument("--work", type=Path, default=WORK, help="embedding cache (kept)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="features.backbone")
    p.add_argument("--validation", action="store_true", help="new photos from the train folder")
    return p.parse_args()


def unlike(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A photo very unlike the catalog: grey, low resolution, small and off-centre on stripes."""
    w, h = image.size
    grey = ImageOps.grayscale(image).convert("RGB")
    low = grey.resize((max(1, w // 3), max(1, h // 3))).resize((w // 2, h // 2))
    stripes = (np.indices((h, w)).sum(axis=0) // 12 % 2 * 90 + 60).astype(np.uint8)
    canvas = Image.fromarray(np.stack([stripes] * 3, axis=-1))
    canvas.paste(low, (int(rng.integers(0, w - w // 2)), int(rng.integers(0, h - h // 2))))
    return canvas


class Embedder:
    """The backbone's vectors of photo files or PIL images, cached by name in the work folder."""

    def __init__(self, backbone: str, work: Path) -> None:
        from vasrch.features.backbones import BackboneSpec, load_backbone

        self.backbone = load_backbone(BackboneSpec(name=backbone))
        spec = self.backbone.spec
        self.work = work / f"{backbone}-{spec.pooling}{spec.gem_p:g}"
        self.work.mkdir(parents=True, exist_ok=True)

    def cached(self, name: str, make) -> np.ndarray:
        path = self.work / f"{name}.npy"
        if not path.is_file():
            np.save(path, self.backbone.embed(make()))
            print(f"  embedded {name}", file=sys.stderr, flush=True)
        return np.load(path)

    def files(self, name: str, paths: list[Path]) -> np.ndarray:
        """The photos' vectors; those bench_ladder.py computed already (same decoding, same
        network, pooling as the backbone's) when its cache has them."""
        from vasrch.catalog.images import decode_image

        spec = self.backbone.spec
        key = spec.pooling + (f"{spec.gem_p:g}" if spec.pooling in ("gem", "rgem") else "")
        ladder = LADDER / f"{spec.name}-{name}-plain-s1.npz"
        if ladder.is_file() and key in np.load(ladder).files:
            with np.load(ladder) as data:
                vectors = data[key]
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        size = self.backbone.spec.input_size
        return self.cached(name, lambda: np.stack([decode_image(p, size).pixels for p in paths]))

    def images(self, name: str, images: list[Image.Image]) -> np.ndarray:
        size = self.backbone.spec.input_size
        square = [i.convert("RGB").resize((size, size), Image.BILINEAR) for i in images]
        return self.cached(name, lambda: np.stack([np.asarray(i) for i in square]))

    def simulated(self, name: str, paths: list[Path], seed: int) -> np.ndarray:
        from vasrch.features.shopper_photos import simulate_shopper_photos

        size = self.backbone.spec.input_size
        return self.cached(name, lambda: simulate_shopper_photos(paths, size, seed)[1])


def shape_row(
    name: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    paths: list[Path],
    new: np.ndarray,
    embedder: Embedder,
    simulation: str,
) -> dict[str, object]:
    """Probes calibrated without held-out photos, both ways, and new photos' recall at them."""
    from vasrch.config import ClusteringConfig, EvaluationConfig, SearchConfig
    from vasrch.index.evaluation import sample_queries
    from vasrch.index.training import (
        HeldOut,
        SimulatedQueries,
        diagnose,
        evaluate_index,
        fit_index,
    )

    search, evaluation = SearchConfig(), EvaluationConfig()
    k = diagnose(vectors, ClusteringConfig().diagnostics).suggested_k
    index, _ = fit_index(ids, vectors, k, "bench", ClusteringConfig(), None, search)
    rows = sample_queries(len(ids), evaluation.simulated_queries, evaluation.seed)
    sim_vectors = embedder.simulated(f"simulated-{simulation}", [paths[i] for i in rows], 0)
    simulated = SimulatedQueries(ids[rows], sim_vectors)
    new_ids = np.array([f"new{i}" for i in range(len(new))], dtype=object)
    held = HeldOut(new_ids, new, None)

    def recall(probes: int) -> float:
        fixed = SearchConfig(probes=probes)
        result = evaluate_index(index, ids, vectors, None, fixed, EvaluationConfig(sample=10), held)
        return result.held_out.recall_at_10

    old = evaluate_index(index, ids, vectors, None, search, evaluation).probes
    ideal = evaluate_index(index, ids, vectors, None, search, evaluation, held).probes
    hardest: dict[str, object] = {}
    for fraction in HARDEST:
        harder = evaluation.model_copy(update={"simulated_hardest": fraction})
        probes = evaluate_index(index, ids, vectors, None, search, harder, None, simulated).probes
        hardest[f"hardest {fraction:g}"] = probes
        hardest[f"recall {fraction:g}"] = recall(probes)
    return {
        "catalog": name,
        "photos": len(ids),
        "k": k,
        "probes before": old,
        "recall before": recall(old),
        **hardest,
        "held-out probes": ideal,
    }


def main() -> int:
    args = parse_args()
    if not args.dataset.is_dir():
        print(f"dataset not found: {args.dataset}", file=sys.stderr)
        return 2
    embedder = Embedder(args.backbone, args.work)
    train = sorted((args.dataset / "train").rglob("*.jpg"))
    test = sorted((args.dataset / "test").rglob("*.jpg"))
    train_vectors = embedder.files("train", train)
    test_vectors = embedder.files("test", test)
    if args.validation:
        order = np.random.default_rng(0).permutation(len(train))
        val, kept = order[:VALIDATION_QUERIES], np.sort(order[VALIDATION_QUERIES:])
        test, test_vectors = [train[i] for i in val], train_vectors[val]
        train, train_vectors = [train[i] for i in kept], train_vectors[kept]
        embedder.work = embedder.work / "validation"
        embedder.work.mkdir(exist_ok=True)
    train_ids = np.array([p.relative_to(args.dataset).as_posix() for p in train], dtype=object)
    rng = np.random.default_rng(0)
    unlike_vectors = embedder.images("test-unlike", [unlike(Image.open(p), rng) for p in test])

    by_class: dict[str, list[int]] = {}
    for i, p in enumerate(train):
        by_class.setdefault(p.parent.name, []).append(i)
    chosen = [i for rows in by_class.values() for i in rows[:SHOT_PRODUCTS]]
    extra = [s for i in chosen for s in product_shots(Image.open(train[i]).convert("RGB"), rng)[1:]]
    extra_vectors = embedder.images("shots", extra)
    shot_ids = np.array(
        [train_ids[i] for i in chosen] + [f"{train_ids[i]}#{j}" for i in chosen for j in range(3)],
        dtype=object,
    )
    shot_vectors = np.concatenate([train_vectors[chosen], extra_vectors])
    shot_paths = [train[i] for i in chosen] + [train[i] for i in chosen for _ in range(3)]
    small = np.sort(np.random.default_rng(1).choice(len(train), SMALL, replace=False))

    full = (train_ids, train_vectors, train)
    rows = [
        shape_row("full", *full, test_vectors, embedder, "full"),
        shape_row("full, unlike", *full, unlike_vectors, embedder, "full"),
        shape_row("4 shots", shot_ids, shot_vectors, shot_paths, test_vectors, embedder, "4 shots"),
        shape_row(
            "small",
            train_ids[small],
            train_vectors[small],
            [train[i] for i in small],
            test_vectors,
            embedder,
            "small",
        ),
    ]
    split = "validation photos of train" if args.validation else "test"
    print(f"backbone {args.backbone}; target recall@10 0.95; new: {args.dataset.name} {split}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
