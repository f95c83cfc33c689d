"""The query path: open a complete run, embed query images, rank neighbours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vasrch.backbones import Backbone, BackboneSpec, load_backbone
from vasrch.images import Decoded, Rejection, decode_image
from vasrch.index import SearchIndex, SearchResult, load_index
from vasrch.runs import read_manifest, resolve_run

RESULT_COLUMNS = ["query", "rank", "image_id", "path", "score"]


@dataclass
class Searcher:
    """A loaded run: its index, the backbone spec it was built with, and catalog paths."""

    run_folder: Path
    manifest: dict[str, Any]
    index: SearchIndex
    spec: BackboneSpec
    paths: pd.Series = field(repr=False)

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def default_probes(self) -> int:
        """The probes calibrated when the run was trained (3 for runs without one)."""
        return int(self.manifest.get("probes", 3))

    def backbone(self, batch_size: int = 32, device: str = "auto") -> Backbone:
        backbone = load_backbone(self.spec, batch_size, device)
        self.index.check_fingerprint(backbone.fingerprint)
        return backbone

    def search_vectors(
        self,
        vectors: np.ndarray,
        top_n: int = 10,
        probes: int | None = None,
        exclude_ids: Sequence[str | None] | None = None,
    ) -> SearchResult:
        probes = min(probes or self.default_probes, self.index.k)
        return self.index.search(vectors, top_n, probes, exclude_ids)

    def _rows(self, image_ids: Sequence[str]) -> np.ndarray:
        rows = self.index.rows_of(image_ids)
        missing = [i for i, r in zip(image_ids, rows, strict=True) if r < 0]
        if missing:
            raise KeyError(f"not in run {self.run_id}: {missing[:5]}")
        return rows

    def search_ids(
        self, image_ids: Sequence[str], top_n: int = 10, probes: int | None = None
    ) -> SearchResult:
        """Neighbours of catalog images (each excluding itself), by their indexed vectors."""
        rows = self._rows(image_ids)
        probes = min(probes or self.default_probes, self.index.k)
        found, scores = self.index.search_rows(self.index.vectors[rows], top_n, probes, rows)
        return self.index.result_of(found, scores)

    def to_table(self, result: SearchResult, queries: Sequence[str]) -> pd.DataFrame:
        """Long result table: query, rank, image_id, path, score."""
        frame = result.to_frame(list(queries)).rename(
            columns={"image_id": "query", "neighbour_id": "image_id"}
        )
        frame["path"] = frame["image_id"].map(self.paths)
        return frame[RESULT_COLUMNS]


def open_run(workspace: Path, run: str | None = None, verify: bool = True) -> Searcher:
    """Load a complete run (LATEST by default), checking its artifacts' hashes."""
    folder = resolve_run(workspace, run)
    manifest = read_manifest(folder, verify=verify)
    spec = BackboneSpec(**manifest["backbone"])
    index = load_index(folder / "index", expected_fingerprint=manifest["fingerprint"])
    catalog = pd.read_parquet(folder / "catalog.parquet", columns=["image_id", "path"])
    return Searcher(folder, manifest, index, spec, catalog.set_index("image_id")["path"])


def embed_files(
    files: Sequence[str | Path | bytes], backbone: Backbone, max_pixels: int = 89_478_485
) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """(vectors of the decodable inputs, their positions, [(position, reason)] of the rest)."""
    size = backbone.spec.input_size
    decoded = [
        decode_image(f if isinstance(f, bytes) else Path(f), size, max_pixels) for f in files
    ]
    ok = [i for i, d in enumerate(decoded) if isinstance(d, Decoded)]
    bad = [(i, d.reason) for i, d in enumerate(decoded) if isinstance(d, Rejection)]
    if not ok:
        return np.zeros((0, backbone.dim), np.float32), ok, bad
    return backbone.embed(np.stack([decoded[i].pixels for i in ok])), ok, bad
