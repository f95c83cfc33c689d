"""Near-duplicate groups from bulk neighbours: every member is a duplicate of its representative.

A pair of neighbours is a near-duplicate when its duplicate score (the print score that bulk
search writes beside each neighbour, print_similarity) is at least the threshold. Groups are
stars, not connected components, so they never chain (A~B and B~C do not put A with C unless A~C):
images are visited by number of duplicates (most first), then by the sum of their scores, then
by catalog order, then by id; an image that no earlier representative has as a duplicate becomes
a representative; every other image joins the representative it scores best against. A
representative left alone takes its best duplicate from a group that keeps two members without
it. Each member carries its score against the representative.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from vasrch.errors import RunIntegrityError
from vasrch.layout import BulkLayout, RunLayout, WorkspaceLayout
from vasrch.workspace.runs import read_artifact, read_manifest, verify_artifacts

GROUP_COLUMNS = {
    "group_id": "int64",
    "image_id": "object",
    "is_representative": "bool",
    "score_to_representative": "float32",
}
# Catalog columns a group table carries along when the run's catalog has them.
LINK_COLUMNS = ["product_id", "path", "url"]


def duplicate_pairs(neighbours: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Undirected pairs (a < b, score) whose duplicate score is at least `threshold`, best
    first; a pair found from both sides keeps its higher score."""
    hits = neighbours[neighbours["duplicate_score"] >= threshold]
    left = hits["image_id"].to_numpy(dtype=object)
    right = hits["neighbour_id"].to_numpy(dtype=object)
    pairs = pd.DataFrame(
        {
            "a": np.where(left < right, left, right),
            "b": np.where(left < right, right, left),
            "score": hits["duplicate_score"].to_numpy(dtype=np.float32),
        }
    )
    pairs = pairs[pairs["a"] != pairs["b"]]
    pairs = pairs.groupby(["a", "b"], as_index=False, sort=False)["score"].max()
    return pairs.sort_values(["score", "a", "b"], ascending=[False, True, True], ignore_index=True)


def read_duplicate_pairs(folder: BulkLayout, threshold: float) -> pd.DataFrame:
    """The pairs of a bulk output folder's neighbour shards at or above `threshold`."""
    shards = folder.neighbour_shards()
    if not shards:
        raise FileNotFoundError(f"no neighbour shards in {folder.root}; run vasrch bulk first")
    dataset = ds.dataset(shards, format="parquet")
    if "duplicate_score" not in dataset.schema.names:
        raise RunIntegrityError(
            f"the neighbours in {folder.root} have no duplicate scores (written by an older "
            "vasrch); train a new run, or run vasrch bulk on a run trained with this version"
        )
    hits = dataset.to_table(
        columns=["image_id", "neighbour_id", "duplicate_score"],
        filter=ds.field("duplicate_score") >= threshold,
    )
    return duplicate_pairs(hits.to_pandas(), threshold)


def duplicate_groups(pairs: pd.DataFrame, ids_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Star groups of near-duplicate pairs (a, b, score); see the module's docstring.

    Columns: group_id, image_id, is_representative, score_to_representative (1.0 for the
    representative). Catalog order is `ids_order` (e.g. the catalog, so the earliest listing
    represents a group among equals); without it ids alone break ties. Group ids run from 0 by
    size (largest first), then by representative id; rows by group, representative first, then
    by score (best first), then by id. The same pairs give the same groups in any row order.
    """
    if pairs.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in GROUP_COLUMNS.items()})
    codes, nodes = pd.factorize(pd.concat([pairs["a"], pairs["b"]], ignore_index=True))
    m = len(pairs)
    ids = np.asarray(nodes, dtype=object)
    n = len(ids)
    score = pairs["score"].to_numpy(dtype=np.float64)
    # Both directions of every pair: edge e runs from src[e] to dst[e].
    src = np.concatenate([codes[:m], codes[m:]])
    dst = np.concatenate([codes[m:], codes[:m]])
    weight = np.concatenate([score, score])
    degree = np.bincount(src, minlength=n)
    strength = np.bincount(src, weights=weight, minlength=n)
    if ids_order is not None:
        position = {image_id: i for i, image_id in enumerate(ids_order)}
        preference = np.array([position.get(i, len(position)) for i in ids], dtype=np.int64)
    else:
        preference = np.zeros(n, dtype=np.int64)
    id_rank = np.argsort(np.argsort(ids.astype(str), kind="stable"), kind="stable")
    visit = np.lexsort((id_rank, preference, -strength, -degree))
    rank = np.empty(n, dtype=np.int64)
    rank[visit] = np.arange(n)

    by_src = np.lexsort((rank[dst], src))
    src, dst, weight = src[by_src], dst[by_src], weight[by_src]
    starts = np.searchsorted(src, np.arange(n + 1))
    is_rep = _choose_representatives(visit, dst, starts)
    group_of = _assign_members(is_rep, rank, src, dst, weight)
    _fill_lonely_representatives(visit, is_rep, group_of, rank, dst, weight, starts)

    table = pd.DataFrame(
        {"node": np.arange(n), "rep": group_of, "image_id": ids, "is_representative": is_rep}
    )
    table = table[table["rep"] >= 0]
    table = table[table.groupby("rep")["node"].transform("size") >= 2]
    edges = pd.DataFrame({"node": src, "rep": dst, "score_to_representative": weight})
    table = table.merge(edges, on=["node", "rep"], how="left")
    table["score_to_representative"] = table["score_to_representative"].fillna(1.0)
    table["size"] = table.groupby("rep")["node"].transform("size")
    reps = table[table["is_representative"]].sort_values(
        ["size", "image_id"], ascending=[False, True]
    )
    group_id = pd.Series(np.arange(len(reps)), index=reps["node"].to_numpy())
    table["group_id"] = group_id.reindex(table["rep"].to_numpy()).to_numpy()
    table = table.sort_values(
        ["group_id", "is_representative", "score_to_representative", "image_id"],
        ascending=[True, False, False, True],
    )
    return table[list(GROUP_COLUMNS)].astype(GROUP_COLUMNS).reset_index(drop=True)


def group_summary(groups: pd.DataFrame) -> pd.DataFrame:
    """One row per group: group_id, size, representative, members ("id (score)", best first),
    and products (the distinct product ids, when `groups` has them)."""
    rows = []
    for group_id, frame in groups.groupby("group_id", sort=True):
        ids, scores = frame["image_id"].tolist(), frame["score_to_representative"].tolist()
        rows.append(
            {
                "group_id": int(group_id),
                "size": len(frame),
                "representative": str(ids[0]),
                "members": ", ".join(
                    f"{i} ({s:.3f})" for i, s in zip(ids[1:], scores[1:], strict=True)
                ),
                "products": ", ".join(dict.fromkeys(map(str, frame.get("product_id", [])))),
            }
        )
    columns = ["group_id", "size", "representative", "members", "products"]
    if "product_id" not in groups.columns:
        columns.remove("products")
    return pd.DataFrame(rows, columns=columns)


def groups_of_folder(
    folder: BulkLayout, threshold: float, ids_order: Sequence[str] | None = None
) -> pd.DataFrame:
    """The duplicate groups of a bulk output folder at `threshold`."""
    return duplicate_groups(read_duplicate_pairs(folder, threshold), ids_order)


def newest_neighbours(workspace: Path, run_folder: Path) -> BulkLayout:
    """Where a run's newest neighbours are: its newest complete bulk job
    (<workspace>/bulk/<run-id>/<job>), else the train flow's bulk step in the run folder."""
    jobs_folder = WorkspaceLayout(Path(workspace)).bulk_jobs(run_folder.name)
    jobs = sorted(p for p in jobs_folder.glob("*") if BulkLayout(p).complete.is_file())
    return BulkLayout(jobs[-1]) if jobs else RunLayout(run_folder).bulk


def run_groups(
    workspace: Path, run_folder: Path, threshold: float
) -> tuple[pd.DataFrame, BulkLayout]:
    """The groups of a saved run at `threshold` from its newest neighbours, each member with
    its product_id and path (and url when the run's catalog has one), and where the neighbours
    came from. The run's catalog, and its own neighbour shards when they are the newest, are
    checked against its manifest first."""
    manifest = read_manifest(run_folder, verify=False)
    run = RunLayout(run_folder)
    catalog = pd.read_parquet(io.BytesIO(read_artifact(run_folder, manifest, run.catalog)))
    source = newest_neighbours(workspace, run_folder)
    if source.root == run.bulk.root:
        shards = [p.relative_to(run_folder).as_posix() for p in source.neighbour_shards()]
        verify_artifacts(run_folder, manifest, shards)
    groups = groups_of_folder(source, threshold, catalog["image_id"].tolist())
    links = ["image_id", *(c for c in LINK_COLUMNS if c in catalog.columns)]
    return groups.merge(catalog[links], on="image_id", how="left"), source


def _choose_representatives(visit: np.ndarray, dst: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Visit images in order; one that no representative so far has as a duplicate becomes one."""
    covered = np.zeros(len(visit), dtype=bool)
    is_rep = np.zeros(len(visit), dtype=bool)
    for node in visit.tolist():
        if not covered[node]:
            is_rep[node] = True
            covered[node] = True
            covered[dst[starts[node] : starts[node + 1]]] = True
    return is_rep


def _assign_members(
    is_rep: np.ndarray, rank: np.ndarray, src: np.ndarray, dst: np.ndarray, weight: np.ndarray
) -> np.ndarray:
    """Representative of each image (itself for a representative): the one it scores best
    against, the earlier visited among equals."""
    group_of = np.where(is_rep, np.arange(len(is_rep)), -1)
    keep = ~is_rep[src] & is_rep[dst]
    u, v, w = src[keep], dst[keep], weight[keep]
    order = np.lexsort((rank[v], -w, u))
    u, v = u[order], v[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = u[1:] != u[:-1]
    group_of[u[first]] = v[first]
    return group_of


def _fill_lonely_representatives(
    visit: np.ndarray,
    is_rep: np.ndarray,
    group_of: np.ndarray,
    rank: np.ndarray,
    dst: np.ndarray,
    weight: np.ndarray,
    starts: np.ndarray,
) -> None:
    """A representative that no image joined takes its best-scoring duplicate from a group that
    keeps at least two members without it."""
    sizes = np.bincount(group_of[group_of >= 0], minlength=len(is_rep))
    for rep in visit[is_rep[visit] & (sizes[visit] == 1)].tolist():
        lo, hi = starts[rep], starts[rep + 1]
        candidates = [
            (-weight[e], rank[dst[e]], int(dst[e]))
            for e in range(lo, hi)
            if sizes[group_of[dst[e]]] >= 3
        ]
        if candidates:
            member = min(candidates)[2]
            sizes[group_of[member]] -= 1
            group_of[member] = rep
            sizes[rep] += 1
