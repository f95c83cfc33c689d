"""Tasks of the extraction stage: prepare and scan the catalog, plan chunks, extract a chunk."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from vasrch import progress
from vasrch.catalog.scan import Scan, ScanOptions, scan_catalog
from vasrch.catalog.sources import Fetching
from vasrch.config import FeaturesConfig
from vasrch.errors import DataError
from vasrch.features.backbones import BackboneSpec, load_backbone
from vasrch.features.extraction import ChunkResult, ExtractSummary, extract_chunk, plan_chunks
from vasrch.features.streamed import StreamedExtraction
from vasrch.workspace.store_folders import StoreFolder, writing_into


@task(name="scan-catalog", cache_policy=NO_CACHE)
def scan_catalog_task(
    folder: Path | str,
    options: ScanOptions,
    demo: bool = False,
    previous: pd.DataFrame | None = None,
    features: FeaturesConfig | None = None,
    cache_dir: str | None = None,
) -> tuple[Scan, list[ChunkResult]]:
    """Generate the demo catalog when asked and missing, then scan and hash the folder; logs
    each image the scan rejects and each folder it leaves out. With `features` and `cache_dir`,
    the remote photos the scan downloads are embedded as they arrive (StreamedExtraction:
    downloaded once); returns the scan and the shards written so."""
    logger = get_run_logger()
    if demo:
        from vasrch.catalog.demo import generate_demo_catalog

        count = generate_demo_catalog(folder)
        logger.info("demo catalog ready: %d images in %s", count, folder)
    streamed: list[ChunkResult] = []
    if features is None or cache_dir is None:
        scan = scan_catalog(folder, previous, options)
    else:
        spec = BackboneSpec.from_config(features)
        stream = StreamedExtraction(
            load_backbone(spec, features.batch_size, features.device),
            Path(cache_dir),
            features.shard_size,
            None if features.decode_workers == "auto" else features.decode_workers,
            features.max_pixels,
            on_batch=lambda n: progress.report("extract", n),
        )
        with stream:
            scan = scan_catalog(folder, previous, options, on_bytes=stream.offer)
        streamed = stream.results
        if streamed:
            logger.info(
                "%d downloaded photos embedded as the scan read them (the model waited %.1f s "
                "for downloads)",
                sum(r.extracted for r in streamed),
                stream.waited_s,
            )
    for warning in scan.warnings:
        logger.warning("%s", warning)
    for row in scan.rejected.itertuples(index=False):
        logger.warning("rejected %s: %s", row.image_id, row.reason)
    logger.info("scanned %s: %d images, %d rejected", folder, len(scan.table), len(scan.rejected))
    if scan.table.empty:
        found = f"no readable images found under {folder} (png, jpg, jpeg, gif, bmp, tiff, webp)"
        if len(scan.rejected):
            first = scan.rejected.iloc[0]
            found += f"; {len(scan.rejected)} rejected, e.g. {first.image_id}: {first.reason}"
        raise DataError(found)
    return scan, streamed


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
    rows: pd.DataFrame,
    spec: BackboneSpec,
    features: FeaturesConfig,
    cache: str | StoreFolder,
    fetching: Fetching | None = None,
) -> ChunkResult:
    """Embed one chunk into one shard of the feature cache `cache` (a local folder, or a folder
    of the workspace's store, written through a temporary folder of this worker); the backbone
    stays warm across chunks in a worker."""
    backbone = load_backbone(spec, features.batch_size, features.device)
    with writing_into(cache) as folder:
        result = extract_chunk(
            rows,
            backbone,
            folder,
            None if features.decode_workers == "auto" else features.decode_workers,
            features.max_pixels,
            on_batch=lambda n: progress.report("extract", n),
            max_file_bytes=features.max_file_bytes,
            fetching=fetching,
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
    """A table artifact with the counts, one row per rejected image (marked when the next run
    tries it again) and one per folder warning."""
    rows = [{"metric": k, "value": str(v)} for k, v in summary.as_dict().items()]
    rows += [
        {"metric": f"rejected: {r.image_id}", "value": r.reason + (" [retried]" if r.retry else "")}
        for r in summary.rejections.itertuples(index=False)
    ]
    rows += [{"metric": "warning", "value": w} for w in summary.warnings]
    create_table_artifact(
        key="extract-summary", table=rows, description="Feature extraction summary"
    )
