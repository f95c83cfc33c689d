"""The run's HTML report: k sweep, cluster sizes, sample clusters, sample queries, near-duplicates.

``write_report`` writes one static page (inline CSS, no scripts, nothing fetched from anywhere)
into ``out_dir`` beside a ``cluster_sizes.png`` histogram and a ``thumbs/`` folder holding small
JPEGs of the images the page shows, and only those. Every link in the page is relative and no
absolute path appears in it, so the folder (inside its run folder, when the elbow plot lives
there) still shows when copied elsewhere; each thumbnail links its full image in ``images/``, a
symlink to the catalog file (see vasrch.pages.thumbnails). This module
picks and shapes what the page shows; ``templates/report.html.j2`` lays it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from vasrch.atomic_files import atomic_path, write_text_atomic
from vasrch.catalog.products import Products, product_caption, web_link
from vasrch.catalog.sources import Fetching
from vasrch.index.figures import figure_label, figure_value
from vasrch.layout import RunLayout
from vasrch.pages import rendering
from vasrch.pages.thumbnails import write_thumbnails

if TYPE_CHECKING:
    from vasrch.index.figures import Evaluation
    from vasrch.index.training import Diagnostics

HISTOGRAM_NAME = "cluster_sizes.png"
MAX_REJECTIONS = 200  # rejected photos the page lists; rejections.parquet holds them all


def write_report(
    out_dir: Path,
    *,
    title: str,
    sweep: pd.DataFrame | None,
    suggested_k: int | None,
    chosen_k: int,
    assignments: pd.DataFrame,
    paths: Mapping[str, str],
    neighbours: pd.DataFrame | None,
    duplicates: pd.DataFrame | None,
    metrics: Mapping[str, float],
    elbow_png: str | None = None,
    notes: Sequence[str] = (),
    sample_clusters: int = 8,
    members_per_cluster: int = 12,
    sample_queries: int = 8,
    seed: int = 0,
    neighbours_per_query: int = 10,
    max_duplicate_groups: int = 50,
    products: Products | None = None,
    rejections: pd.DataFrame | None = None,
    fetching: Fetching | None = None,
) -> Path:
    """Write ``out_dir/report.html`` with its histogram and thumbnails; return the page's path.

    ``assignments`` has image_id, cluster, distance (to the own centroid; members are shown
    closest first); ``paths`` maps image_id to the original file, read to make thumbnails and
    linked from them; ``neighbours`` has image_id, rank (1-based), neighbour_id, score;
    ``duplicates`` has group_id, image_id, is_representative (and optionally
    score_to_representative). ``elbow_png`` is the plot's path relative to ``out_dir`` (e.g.
    ``"../diagnostics/elbow_silhouette.png"``) and must lie in ``out_dir`` or its parent run
    folder. ``notes`` are sentences shown under the summary (how probes were calibrated, a k at
    the edge of the sweep). Samples of clusters and queries are drawn with ``seed``;
    ``members_per_cluster`` also caps the members shown per duplicate group. With ``products``,
    each cluster member, neighbour and duplicate shows its product id and title and links to
    the product's ``url`` when there is one. ``rejections`` (image_id, row, reason, retry) are
    the photos the run could not use, listed in their own section.
    """
    out_dir = Path(out_dir)
    _check_counts(
        sample_clusters=sample_clusters,
        sample_queries=sample_queries,
        max_duplicate_groups=max_duplicate_groups,
    )
    _check_counts(
        minimum=1,
        members_per_cluster=members_per_cluster,
        neighbours_per_query=neighbours_per_query,
    )
    _require(assignments, "assignments", ("image_id", "cluster", "distance"))
    if sweep is not None:
        _require(sweep, "sweep", ("k", "inertia", "silhouette"))
    if neighbours is not None:
        _require(neighbours, "neighbours", ("image_id", "rank", "neighbour_id", "score"))
    if duplicates is not None:
        _require(duplicates, "duplicates", ("group_id", "image_id", "is_representative"))
    elbow_src = _elbow_src(out_dir, elbow_png) if elbow_png is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)

    sizes = cluster_sizes(assignments, chosen_k)
    histogram = write_size_histogram(sizes, out_dir / HISTOGRAM_NAME) if len(sizes) else None
    clusters = _sample_clusters(assignments, sizes, sample_clusters, members_per_cluster, seed)
    queries = (
        _sample_queries(neighbours, sample_queries, neighbours_per_query, seed)
        if neighbours is not None
        else None
    )
    groups = (
        _first_groups(duplicates, max_duplicate_groups, members_per_cluster)
        if duplicates is not None
        else None
    )
    if products is not None:
        _describe_products(clusters, queries, groups, products)
    thumbs = write_thumbnails(
        _shown_ids(clusters, queries, groups), paths, out_dir, fetching=fetching
    )
    page = rendering.render(
        "report.html.j2",
        title=title,
        summary=_summary(assignments, sizes, suggested_k, chosen_k, metrics),
        notes=list(notes),
        sweep=_sweep_rows(sweep),
        suggested_k=suggested_k,
        chosen_k=chosen_k,
        elbow_src=elbow_src,
        sizes=_size_stats(sizes),
        histogram=None if histogram is None else histogram.name,
        clusters=clusters,
        non_empty=int((sizes > 0).sum()),
        queries=queries,
        duplicates=groups,
        rejections=None if rejections is None else _rejection_rows(rejections),
        thumbs=thumbs,
    )
    report = RunLayout(out_dir).report
    write_text_atomic(report, page)
    return report


def cluster_sizes(assignments: pd.DataFrame, chosen_k: int) -> pd.Series:
    """Images per cluster id, clusters 0..chosen_k-1 that got no image counting 0."""
    counts = assignments["cluster"].value_counts()
    index = counts.index.union(pd.RangeIndex(chosen_k))
    return counts.reindex(index, fill_value=0).sort_index().astype(np.int64)


def write_size_histogram(sizes: pd.Series, path: Path) -> Path:
    """Save a histogram of cluster sizes as a PNG, atomically (matplotlib Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    values = sizes.to_numpy()
    low, high = int(values.min()), int(values.max())
    # One bar per size while sizes span few values, else 30 equal bins.
    bins = np.arange(low, high + 2) - 0.5 if high - low < 30 else 30
    fig = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(values, bins=bins, color="tab:blue", edgecolor="white")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("images in the cluster")
    ax.set_ylabel("clusters")
    ax.set_title(f"Cluster sizes (k = {len(values)})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _check_counts(minimum: int = 0, **counts: int) -> None:
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _require(frame: pd.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{name} lacks the column(s) {missing}; it has {list(frame.columns)}"
            f" and needs {list(columns)}"
        )


def _elbow_src(out_dir: Path, elbow_png: str) -> str:
    """The plot's relative URL, after checking it lies in the run folder and exists."""
    relative = Path(elbow_png)
    example = "'../diagnostics/elbow_silhouette.png'"
    if relative.is_absolute():
        raise ValueError(
            f"elbow_png must be relative to out_dir so the report survives a copy, got the"
            f" absolute path {elbow_png!r}; pass e.g. {example}"
        )
    target = (out_dir / relative).resolve()
    if not target.is_relative_to(out_dir.resolve().parent):
        raise ValueError(
            f"elbow_png {elbow_png!r} points outside the run folder {out_dir.parent}, so a copy"
            f" of the run would lose it; pass a path inside it, e.g. {example}"
        )
    if not target.is_file():
        raise FileNotFoundError(
            f"elbow_png {elbow_png!r} (relative to {out_dir}) does not exist at {target};"
            " write the plot first or pass elbow_png=None"
        )
    return quote(relative.as_posix())


def _sample(values: list, n: int, rng: np.random.Generator) -> list:
    """Up to n of ``values`` drawn without replacement, in their original order."""
    if n >= len(values):
        return values
    return [values[i] for i in sorted(rng.choice(len(values), size=n, replace=False))]


def _summary(
    assignments: pd.DataFrame,
    sizes: pd.Series,
    suggested_k: int | None,
    chosen_k: int,
    metrics: Mapping[str, float],
) -> list[tuple[str, object]]:
    """(name, value) rows of the summary table, the run's metrics last."""
    return [
        ("images", len(assignments)),
        ("clusters (k used)", chosen_k),
        ("suggested k", "none (no sweep)" if suggested_k is None else suggested_k),
        ("empty clusters", int((sizes == 0).sum())),
        *((figure_label(name), figure_value(name, value)) for name, value in metrics.items()),
    ]


def _sweep_rows(sweep: pd.DataFrame | None) -> list[dict[str, Any]] | None:
    """The sweep's k, inertia and silhouette by increasing k."""
    if sweep is None:
        return None
    return [
        {"k": int(row.k), "inertia": float(row.inertia), "silhouette": float(row.silhouette)}
        for row in sweep.sort_values("k").itertuples(index=False)
    ]


def _size_stats(sizes: pd.Series) -> dict[str, Any] | None:
    """Smallest, median and largest cluster size and the number of clusters (None for none)."""
    if not len(sizes):
        return None
    values = sizes.to_numpy()
    return {
        "smallest": int(values.min()),
        "median": float(np.median(values)),
        "largest": int(values.max()),
        "clusters": len(values),
    }


def _sample_clusters(
    assignments: pd.DataFrame, sizes: pd.Series, n: int, members: int, seed: int
) -> list[dict[str, Any]]:
    """n sampled non-empty clusters: id, size and the ``members`` closest to the centroid."""
    non_empty = [int(c) for c in sizes.index[sizes.to_numpy() > 0]]
    chosen = _sample(non_empty, n, np.random.default_rng([seed, 0]))
    rows = assignments[assignments["cluster"].isin(chosen)]
    rows = rows.sort_values(["cluster", "distance", "image_id"], kind="stable")
    heads = rows.groupby("cluster", sort=True).head(members)
    return [
        {
            "id": int(cluster),
            "size": int(sizes[cluster]),
            "members": [
                {"image_id": str(image_id), "distance": float(distance)}
                for image_id, distance in zip(frame["image_id"], frame["distance"], strict=True)
            ],
        }
        for cluster, frame in heads.groupby("cluster", sort=True)
    ]


def _sample_queries(
    neighbours: pd.DataFrame, n: int, per_query: int, seed: int
) -> list[dict[str, Any]]:
    """n sampled query ids, each with its top ``per_query`` neighbours by rank."""
    ids = sorted(pd.unique(neighbours["image_id"]).tolist())
    chosen = _sample(ids, n, np.random.default_rng([seed, 1]))
    rows = neighbours[neighbours["image_id"].isin(chosen)].sort_values(
        ["image_id", "rank"], kind="stable"
    )
    heads = rows.groupby("image_id", sort=True).head(per_query)
    return [
        {
            "image_id": str(query),
            "neighbours": [
                {
                    "image_id": str(row.neighbour_id),
                    "rank": int(row.rank),
                    "score": float(row.score),
                }
                for row in frame.itertuples(index=False)
            ],
        }
        for query, frame in heads.groupby("image_id", sort=True)
    ]


def _first_groups(duplicates: pd.DataFrame, max_groups: int, members: int) -> dict[str, Any]:
    """The first ``max_groups`` groups (representative first, up to ``members`` each), with the
    number of groups and images in all and of groups left out."""
    group_ids = sorted(int(g) for g in pd.unique(duplicates["group_id"]))
    shown = group_ids[:max_groups]
    rows = duplicates[duplicates["group_id"].isin(shown)]
    rows = rows.sort_values(
        ["group_id", "is_representative"], ascending=[True, False], kind="stable"
    )
    sizes = duplicates.groupby("group_id").size()
    groups = [
        {
            "id": int(group),
            "size": int(sizes[group]),
            "members": [_group_member(row) for row in frame.head(members).to_dict("records")],
        }
        for group, frame in rows.groupby("group_id", sort=True)
    ]
    return {
        "groups": groups,
        "total": len(group_ids),
        "images": len(duplicates),
        "left_out": len(group_ids) - len(shown),
    }


def _group_member(row: Mapping[str, Any]) -> dict[str, Any]:
    """A group member's id, whether it represents the group, and its duplicate score against
    the representative (None if unknown)."""
    score = row.get("score_to_representative")
    return {
        "image_id": str(row["image_id"]),
        "representative": bool(row["is_representative"]),
        "score": None if score is None else float(score),
    }


def _rejection_rows(rejections: pd.DataFrame) -> dict[str, Any]:
    """The first MAX_REJECTIONS rejected photos as the page lists them (id, manifest row, ''
    for none, reason, what the next run does) and how many there are."""
    rows = [
        {
            "image_id": str(r["image_id"]),
            "row": "" if pd.isna(r["row"]) else int(r["row"]),
            "reason": str(r["reason"]),
            "next_run": "tried again" if r["retry"] else "kept rejected",
        }
        for r in rejections.head(MAX_REJECTIONS).to_dict("records")
    ]
    return {"rows": rows, "total": len(rejections)}


def _describe_products(
    clusters: list[dict[str, Any]],
    queries: list[dict[str, Any]] | None,
    groups: dict[str, Any] | None,
    products: Products,
) -> None:
    """Give each cluster member, neighbour and duplicate group member its product caption and
    url."""
    tiles = [m for cluster in clusters for m in cluster["members"]]
    tiles += [n for query in queries or [] for n in query["neighbours"]]
    tiles += [m for group in (groups or {}).get("groups", []) for m in group["members"]]
    if not tiles:
        return
    described = products.describe([tile["image_id"] for tile in tiles]).to_dict("records")
    for tile, row in zip(tiles, described, strict=True):
        tile["caption"] = product_caption(row)
        tile["url"] = web_link(row.get("url"))


def _shown_ids(
    clusters: list[dict[str, Any]],
    queries: list[dict[str, Any]] | None,
    groups: dict[str, Any] | None,
) -> list[str]:
    """Every image id the page shows, in page order (repeats included)."""
    ids = [member["image_id"] for cluster in clusters for member in cluster["members"]]
    for query in queries or []:
        ids += [query["image_id"], *(n["image_id"] for n in query["neighbours"])]
    for group in groups["groups"] if groups is not None else []:
        ids += [member["image_id"] for member in group["members"]]
    return ids


def write_run_report(
    run: RunLayout,
    catalog: pd.DataFrame,
    diag: Diagnostics,
    k: int,
    evaluation: Evaluation,
    title: str,
    fetching: Fetching | None = None,
) -> Path:
    """report.html of a run folder from its own files; sample queries come from the first
    neighbour shard, so the report stays bounded; photos at URLs are read as `fetching` says."""
    notes = [f"Probes calibrated on {evaluation.calibrated_on}."]
    notes += [diag.note] if diag.note else []
    notes += [f"Suggested k = {diag.suggested_k}: {diag.reason}."] if diag.reason else []
    shards = run.bulk.neighbour_shards()
    duplicates = run.bulk.duplicates
    rejections = run.rejections
    return write_report(
        run.root,
        title=title,
        sweep=diag.sweep,
        suggested_k=diag.suggested_k,
        chosen_k=k,
        assignments=pd.read_parquet(run.index.assignments),
        paths=dict(zip(catalog["image_id"], catalog["path"], strict=True)),
        neighbours=pd.read_parquet(shards[0]) if shards else None,
        duplicates=pd.read_parquet(duplicates) if duplicates.is_file() else None,
        metrics=evaluation.figures(),
        elbow_png=run.diagnostics.plot.relative_to(run.root).as_posix(),
        notes=notes,
        products=Products.from_catalog(catalog),
        rejections=pd.read_parquet(rejections) if rejections.is_file() else None,
        fetching=fetching,
    )
