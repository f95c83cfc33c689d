"""Tasks of the extraction stage: prepare and scan the catalog, plan chunks, extract a chunk."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from vasrch import progress
from vasrch.backbones import BackboneSpec, load_backbone
from vasrch.catalog import scan_catalog
from vasrch.config import FeaturesConfig
from vasrch.features import ChunkResult, ExtractSummary, extract_chunk, plan_chunks


@task(name="scan-catalog", cache_policy=NO_CACHE)
def scan_catalog_task(
    folder: Path, demo: bool = False, previous: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Generate the demo catalog when asked and missing, then scan and hash the folder."""
    logger = get_run_logger()
    if demo:
        from vasrch.demo import generate_demo_catalog

        count = generate_demo_catalog(folder)
        logger.info("demo catalog ready: %d images in %s", count, folder)
    table = scan_catalog(folder, previous)
    logger.info("scanned %s: %d images", folder, len(table))
    if table.empty:
        raise ValueError(f"no images found under {folder} (png, jpg, jpeg, gif, bmp, tiff, webp)")
    return table


@task(name="plan-extraction", cache_policy=NO_CACHE)
def plan_chunks_task(catalog: pd.DataFrame, cache_dir: str, shard_size: int) -> list[pd.DataFrame]:
    """The catalog rows still to embed, in chunks of `shard_size`; logs what is cached."""
    chunks = plan_chunks(catalog, cache_dir, shard_size)
    todo = sum(len(c) for c in chunks)
    progress.report("extract", 0, todo)
    get_run_logger().info(
        "%d images to extract in %d chunks; %d already cached",
        todo,
        len(chunks),
        len(catalog) - todo,
    )
    return chunks


@task(name="extract-chunk", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def extract_chunk_task(
    rows: pd.DataFrame, spec: BackboneSpec, features: FeaturesConfig, cache_dir: str
) -> ChunkResult:
    """Embed one chunk into one shard; the backbone stays warm across chunks in a worker."""
    backbone = load_backbone(spec, features.batch_size, features.device)
    result = extract_chunk(
        rows,
        backbone,
        cache_dir,
        features.decode_workers,
        features.max_pixels,
        on_batch=lambda n: progress.report("extract", n),
    )
    get_run_logger().info(
        "shard %s: %d vectors, %d rejected, %.1f images/s",
        result.shard,
        result.extracted,
        result.rejected,
        (result.extracted + result.rejected) / max(result.seconds, 1e-9),
    )
    return result


def publish_extract_summary(summary: ExtractSummary) -> None:
    """A table artifact with the counts and one row per rejected image."""
    rows = [{"metric": k, "value": str(v)} for k, v in summary.as_dict().items()]
    rows += [
        {"metric": f"rejected: {r.image_id}", "value": r.reason}
        for r in summary.rejections.itertuples(index=False)
    ]
    create_table_artifact(
        key="extract-summary", table=rows, description="Feature extraction summary"
    )
