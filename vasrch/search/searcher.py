"""The query path: open a complete run, embed query images, rank neighbours."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vasrch.catalog.ids import Ids
from vasrch.catalog.images import DEFAULT_MAX_PIXELS, Decoded, Rejection, decode_image
from vasrch.catalog.products import FilterSpec, Products
from vasrch.config import SearchConfig
from vasrch.features.backbones import Backbone, BackboneSpec, load_backbone
from vasrch.index.search_index import SearchIndex, SearchResult, load_index
from vasrch.layout import RunLayout
from vasrch.search.masks import MaskCache
from vasrch.search.parameters import SearchParams, check_count, resolve_search_params
from vasrch.search.results import typed
from vasrch.workspace.hidden import read_hidden, record_stamp
from vasrch.workspace.run_manifest import RunManifest
from vasrch.workspace.runs import RunError, read_manifest, resolve_run


@dataclass
class Searcher:
    """A loaded run: its manifest, its index, its catalog's paths and products, and the
    config's `search` section that sets top_n and probes when a call does not. Answers are
    distinct products, each by its best photo. The catalog's columns are held compactly (Arrow
    strings, hashed lookups), not as Python objects."""

    run_folder: Path
    manifest: RunManifest
    index: SearchIndex
    paths: Ids = field(repr=False)  # each catalog photo's path, in catalog_photos' order
    products: Products = field(repr=False)
    search: SearchConfig = field(default_factory=SearchConfig)
    # the catalog's sha256 digests and the photo of each, held compactly
    catalog_hashes: Ids = field(default_factory=lambda: Ids.of([]), repr=False)
    catalog_photos: Ids = field(default_factory=lambda: Ids.of([]), repr=False)
    _masks: MaskCache = field(default_factory=MaskCache, repr=False)
    # (stamp of the workspace's hidden-products record, mask of the rows it hides)
    _hidden: tuple[tuple[int, int, int] | None, np.ndarray | None] = field(
        default=(None, None), repr=False
    )

    @property
    def run_id(self) -> str:
        """The run's id, as its manifest records it."""
        return self.manifest.run_id

    @property
    def spec(self) -> BackboneSpec:
        """The backbone the run was built with."""
        return self.manifest.backbone

    @property
    def calibrated_probes(self) -> int:
        """The probes calibrated when the run was trained."""
        return self.manifest.calibration.probes

    def params(self, top_n: int | None = None, probes: int | None = None) -> SearchParams:
        """top_n and probes for this run: the arguments (checked: callers pass them here), else
        the config, else calibration."""
        return resolve_search_params(
            k=self.index.k,
            n=self.index.n,
            top_n=check_count("top_n", top_n),
            probes=check_count("probes", probes),
            configured=self.search,
            calibrated=self.calibrated_probes,
        )

    def backbone(self, batch_size: int = 32, device: str = "auto") -> Backbone:
        """The run's backbone, checked to produce the vectors the index was built from."""
        backbone = load_backbone(self.spec, batch_size, device)
        self.index.check_fingerprint(backbone.fingerprint)
        return backbone

    @property
    def workspace(self) -> Path:
        """The workspace the run belongs to (runs/<run-id> inside it)."""
        return self.run_folder.parents[1]

    def hidden_rows(self) -> np.ndarray | None:
        """Mask of the index rows whose product the workspace hides now (None: none), re-read
        whenever the record changes (a stat per search), so a hide applies to the next answer."""
        stamp = record_stamp(self.workspace)
        known, mask = self._hidden  # one read: worker threads may replace it meanwhile
        if stamp != known:
            hidden = read_hidden(self.workspace).ids if stamp is not None else frozenset()
            wanted = {"product_id": sorted(hidden)}
            mask = self.products.allowed(self.index.ids, wanted) if hidden else None
            mask = mask if mask is not None and mask.any() else None
            self._hidden = (stamp, mask)
        return mask

    def allowed(self, filters: FilterSpec | None) -> np.ndarray | None:
        """Mask of the index rows an answer may hold: products that pass `filters` and that the
        workspace does not hide (None: every row); unknown filter columns are a ValueError
        naming the catalog's columns."""
        hidden = self.hidden_rows()
        passing = self._passing(filters)
        if hidden is None:
            return passing
        return ~hidden if passing is None else passing & ~hidden

    def _passing(self, filters: FilterSpec | None) -> np.ndarray | None:
        """Mask of the index rows whose product passes `filters` (None: no filter), kept in a
        bounded cache that worker threads share."""
        if not filters:
            return None
        checked = self.products.check_filters(filters)
        key = json.dumps(checked, sort_keys=True)
        return self._masks.get(key, lambda: self.products.allowed(self.index.ids, checked))

    def search_vectors(
        self,
        vectors: np.ndarray,
        top_n: int | None = None,
        probes: int | None = None,
        exclude_ids: Sequence[str | None] | None = None,
        filters: FilterSpec | None = None,
    ) -> SearchResult:
        """Neighbours of query vectors (see `params` for the defaults); `exclude_ids` leaves
        out each query's own product, `filters` keeps products whose metadata match."""
        chosen = self.params(top_n, probes)
        allowed = self.allowed(filters)
        return self.index.search(vectors, chosen.top_n, chosen.probes, exclude_ids, allowed)

    def _rows(self, image_ids: Sequence[str]) -> np.ndarray:
        rows = self.index.rows_of(image_ids)
        missing = [i for i, r in zip(image_ids, rows, strict=True) if r < 0]
        if missing:
            raise KeyError(f"not in run {self.run_id}: {missing[:5]}")
        return rows

    def search_ids(
        self,
        image_ids: Sequence[str],
        top_n: int | None = None,
        probes: int | None = None,
        filters: FilterSpec | None = None,
    ) -> SearchResult:
        """Neighbours of catalog images (each excluding its own product), by their indexed
        vectors."""
        rows = self._rows(image_ids)
        chosen = self.params(top_n, probes)
        found, scores = self.index.search_rows(
            self.index.vectors[rows],
            chosen.top_n,
            chosen.probes,
            rows,
            allowed=self.allowed(filters),
        )
        return self.index.result_of(found, scores)

    def catalog_photo(self, sha256: Sequence[str]) -> list[str | None]:
        """The catalog photo with each of these sha256 digests (None where there is none): a
        query that is a catalog photo leaves its own product out of its answers."""
        rows = self.catalog_hashes.positions(list(sha256))
        return [self.catalog_photos[int(r)] if r >= 0 else None for r in rows]

    def path_of(self, image_ids: Sequence[str]) -> list[str | None]:
        """The path of each of these catalog photos (None for an id the catalog lacks)."""
        rows = self.catalog_photos.positions(list(image_ids))
        return [self.paths[int(r)] if r >= 0 else None for r in rows]

    def to_table(
        self, result: SearchResult, queries: Sequence[str], show_paths: bool = False
    ) -> pd.DataFrame:
        """Long result table: query, rank, product_id, score, image_id (the photo that
        matched), the product's metadata columns, and with `show_paths` the photo's path."""
        frame = result.to_frame(list(queries)).rename(
            columns={"image_id": "query", "neighbour_id": "image_id"}
        )
        described = self.products.describe(frame["image_id"].to_numpy())
        table = pd.concat(
            [
                frame[["query", "rank"]],
                described[["product_id"]],
                frame[["score", "image_id"]],
                described.drop(columns="product_id"),
            ],
            axis=1,
        )
        if show_paths:
            table["path"] = self.path_of(frame["image_id"].to_numpy())
        return typed(table)

    def answer_rows(self, result: SearchResult, show_paths: bool = False) -> list[dict[str, Any]]:
        """The first query's answers as plain rows, as `to_table` gives them without the query
        column: what the query service sends, built without pandas (a served request's
        budget is a few milliseconds)."""
        found = np.isfinite(result.scores[0])
        ids, scores = result.ids[0][found], result.scores[0][found]
        described = self.products.columns_of(ids)
        paths = self.path_of(ids) if show_paths else []
        rows = []
        for i, (image_id, score) in enumerate(zip(ids, scores, strict=True)):
            row = {"rank": i + 1, "product_id": described["product_id"][i], "score": float(score)}
            row["image_id"] = image_id
            row.update({c: v[i] for c, v in described.items() if c != "product_id"})
            if show_paths:
                row["path"] = paths[i]
            rows.append(row)
        return rows


def open_run(
    workspace: Path,
    run: str | None = None,
    search: SearchConfig | None = None,
    in_memory: bool = False,
) -> Searcher:
    """Load a complete run (LATEST by default), always checking its artifacts' hashes first;
    `search` is the config section whose top_n and probes apply when a search names none.

    With `in_memory`, the vectors are read into memory rather than memory-mapped, and the hashes
    are checked again once everything is loaded: what the searcher holds is then the verified
    run, whatever happens to its files afterwards."""
    folder = resolve_run(workspace, run)
    layout = RunLayout(folder)
    manifest = read_manifest(folder, verify=True)
    index = load_index(
        layout.index.root, expected_fingerprint=manifest.fingerprint, mmap=not in_memory
    )
    catalog = pd.read_parquet(layout.catalog).drop(columns="status", errors="ignore")
    if in_memory and read_manifest(folder, verify=True) != manifest:
        raise RunError(f"run {folder.name}: manifest.json changed while the run was loading")
    return Searcher(
        folder,
        manifest,
        index,
        Ids.of(catalog["path"].astype(str).to_numpy()),
        Products.from_catalog(catalog),
        search or SearchConfig(),
        Ids(pa.array(catalog["sha256"])),
        Ids(pa.array(catalog["image_id"])),
    )


def embed_files(
    files: Sequence[str | Path | bytes], backbone: Backbone, max_pixels: int = DEFAULT_MAX_PIXELS
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
