"""The original library's extraction loop beside vasrch's pipeline, on the same 200 images.

Original: for each image, Keras `load_img(target_size=(224, 224))`, `img_to_array`,
`preprocess_input`, then `model.predict(x[None])` one image at a time, with VGG16 cut at
`block5_pool` and flattened (25,088-d). Weights are random (`weights=None`): the speed does not
depend on them and nothing is downloaded. The original also saved each vector to a file; that
is left out, which only flatters the original.

vasrch: scan, decode in threads overlapped with batched inference, write a Parquet shard into a
fresh cache folder (`scan_catalog` + `plan_chunks` + `extract_chunk`), once with the same VGG16
(`weights: none`, `layer: block5_pool`, `pooling: flatten`) and once with the default
EfficientNet-Lite0. Models are built and warmed up before any timing, for all three.

    python benchmarks/bench_original.py
    python benchmarks/bench_original.py PATH --images 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clothing-small"
TARGET_VGG = 1.5
TARGET_LITE0 = 10.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="catalog folder")
    p.add_argument("--images", type=int, default=200, help="how many images (evenly spread)")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (vasrch)")
    return p.parse_args()


def sample_folder(dataset: Path, count: int, dest: Path) -> list[Path]:
    """Copy `count` images spread evenly over the sorted catalog into `dest`; their new paths."""
    from vasrch.catalog.scan import iter_image_files

    files = iter_image_files(dataset)
    picked = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).astype(int)]
    out = []
    for src in picked:
        dst = dest / src.relative_to(dataset)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def original_loop(paths: list[Path]) -> float:
    """Images/s of the original library's per-image loop (after building and one warm-up)."""
    import keras
    from keras.applications.vgg16 import VGG16, preprocess_input
    from keras.utils import img_to_array, load_img

    base = VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    model = keras.Model(base.inputs, base.get_layer("block5_pool").output)

    def features(path: Path) -> np.ndarray:
        img = load_img(path, target_size=(224, 224))
        x = preprocess_input(img_to_array(img))
        return model.predict(x[None], verbose=0).flatten()

    dim = features(paths[0]).shape[0]
    if dim != 25_088:
        raise RuntimeError(f"expected 25,088-d vectors from VGG16 block5_pool, got {dim}")
    start = time.perf_counter()
    for p in paths:
        features(p)
    return len(paths) / (time.perf_counter() - start)


def pipeline(root: Path, spec: object, batch_size: int, workspace: Path) -> tuple[float, int]:
    """(images/s, vector dim) of scan + extract into a fresh cache, the backbone built and warm."""
    from vasrch.catalog.scan import scan_catalog
    from vasrch.features.backbones import load_backbone
    from vasrch.features.extraction import (
        cache_dir_for,
        extract_chunk,
        feature_matrix,
        iter_shards,
        plan_chunks,
    )

    backbone = load_backbone(spec, batch_size=batch_size)
    size = backbone.spec.input_size
    backbone.embed(np.zeros((batch_size, size, size, 3), dtype=np.uint8))
    cache_dir = cache_dir_for(workspace, backbone.fingerprint)
    start = time.perf_counter()
    catalog = scan_catalog(root).table
    extracted = sum(
        extract_chunk(chunk, backbone, cache_dir).extracted
        for chunk in plan_chunks(catalog, cache_dir, shard_size=1024)
    )
    rate = len(catalog) / (time.perf_counter() - start)
    if extracted != len(catalog):
        raise RuntimeError(f"{backbone.spec.name}: {extracted} vectors for {len(catalog)} images")
    dim = feature_matrix(next(iter_shards(cache_dir))).shape[1]
    return rate, dim


def main() -> None:
    args = parse_args()
    dataset = args.dataset.resolve()
    if not dataset.is_dir():
        sys.exit(f"dataset folder not found: {dataset} (pass the clothing-small folder)")
    load_before = os.getloadavg()[0]

    from vasrch.features.backbones import BackboneSpec

    with tempfile.TemporaryDirectory(prefix="bench-original-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "catalog"
        paths = sample_folder(dataset, args.images, root)
        original = original_loop(paths)
        vgg_spec = BackboneSpec(
            name="VGG16", weights="none", layer="block5_pool", pooling="flatten"
        )
        vgg, vgg_dim = pipeline(root, vgg_spec, args.batch_size, tmp / "ws-vgg")
        lite0, lite0_dim = pipeline(root, BackboneSpec(), args.batch_size, tmp / "ws-lite0")

    def verdict(ratio: float, target: float) -> str:
        return f"target >= {target}x: {'met' if ratio >= target else 'NOT met'}"

    print(f"dataset                 {dataset}  images {len(paths)}  CPUs {os.cpu_count()}")
    print(f"load average            {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"original loop (VGG16)   {original:7.2f} images/s  25088-d, one predict per image")
    print(
        f"vasrch VGG16            {vgg:7.2f} images/s  {vgg_dim}-d, batch {args.batch_size}"
        f"  -> {vgg / original:5.2f}x  ({verdict(vgg / original, TARGET_VGG)})"
    )
    print(
        f"vasrch Lite0 (default)  {lite0:7.2f} images/s  {lite0_dim}-d, batch {args.batch_size}"
        f"  -> {lite0 / original:5.2f}x  ({verdict(lite0 / original, TARGET_LITE0)})"
    )


if __name__ == "__main__":
    main()
