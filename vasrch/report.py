"""The run's HTML report: k sweep, cluster sizes, sample clusters, sample queries, near-duplicates.

``write_report`` writes one static page (inline CSS, no scripts, nothing fetched from anywhere)
into ``out_dir`` beside a ``cluster_sizes.png`` histogram and a ``thumbs/`` folder holding small
JPEGs of the images the page shows, and only those. Every link in the page is relative and no
absolute path appears in it, so the folder (inside its run folder, when the elbow plot lives
there) still shows when copied elsewhere.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from vasrch.fileio import atomic_path, write_text_atomic
from vasrch.images import DECODABLE_FORMATS, Decoded, decode_image
from vasrch.layout import RunLayout

if TYPE_CHECKING:
    from vasrch.training import Diagnostics

REPORT_NAME = "report.html"
HISTOGRAM_NAME = "cluster_sizes.png"
THUMBS_DIR = "thumbs"
PLACEHOLDER_NAME = "placeholder.jpg"
THUMB_SIZE = 128  # longest side, in pixels
THUMB_QUALITY = 80
_PLACEHOLDER_GREY = (190, 190, 190)
_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS_SWAPPING_AXES = {5, 6, 7, 8}

PAGE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1180px;padding:0 16px;color:#222;background:#fafafa;line-height:1.4}
h1{margin:0 0 4px}h2{margin:32px 0 8px;border-bottom:1px solid #ccc;padding-bottom:4px}
h3{margin:18px 0 6px;font-size:15px}
nav a{margin-right:14px}.muted{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;background:#fff}
td,th{border:1px solid #ddd;padding:3px 10px;text-align:right}
th{background:#f0f0f0}td.key{text-align:left}
tr.suggested td{background:#e3f4e6;font-weight:bold}tr.chosen td:first-child::after{content:" ◀"}
img.plot{max-width:100%;height:auto;border:1px solid #ddd;background:#fff}
.grid{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
figure.tile{margin:0;width:136px;padding:4px;background:#fff;border:1px solid #ddd;
border-radius:4px}
figure.tile .frame{width:128px;height:128px;display:flex;align-items:center;
justify-content:center;background:#f4f4f4}
figure.tile img{max-width:128px;max-height:128px}
figcaption{font-size:11px;word-break:break-all;margin-top:3px}
figcaption .val{display:block;color:#555;font-variant-numeric:tabular-nums}
figure.query{border:2px solid #3569c9}figure.rep{border:2px solid #2a9a4a}
figure.bad .frame{outline:2px dashed #c33;outline-offset:-2px}
.arrow{align-self:center;font-size:28px;color:#999;padding:0 4px}
"""


@dataclass(frozen=True)
class Thumb:
    """A thumbnail in the report folder: ``src`` is relative to it; ``problem`` says why the grey
    placeholder is shown instead of the image (None when the image decoded)."""

    src: str
    width: int
    height: int
    problem: str | None = None


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
    sample_clusters: int = 8,
    members_per_cluster: int = 12,
    sample_queries: int = 8,
    seed: int = 0,
    neighbours_per_query: int = 10,
    max_duplicate_groups: int = 50,
) -> Path:
    """Write ``out_dir/report.html`` with its histogram and thumbnails; return the page's path.

    ``assignments`` has image_id, cluster, distance (to the own centroid; members are shown
    closest first); ``paths`` maps image_id to the original file, read only to make thumbnails;
    ``neighbours`` has image_id, rank (1-based), neighbour_id, score; ``duplicates`` has group_id,
    image_id, is_representative (and optionally mean_similarity). ``elbow_png`` is the plot's
    path relative to ``out_dir`` (e.g. ``"../diagnostics/elbow_silhouette.png"``) and must lie
    in ``out_dir`` or its parent run folder. Samples of clusters and queries are drawn with
    ``seed``; ``members_per_cluster`` also caps the members shown per duplicate group.
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
    groups, groups_left_out = (
        _first_groups(duplicates, max_duplicate_groups, members_per_cluster)
        if duplicates is not None
        else (None, 0)
    )
    shown = _shown_ids(clusters, queries, groups)
    thumbs = write_thumbnails(shown, paths, out_dir)

    body = [
        f"<h1>{_e(title)}</h1>",
        '<nav><a href="#summary">Summary</a><a href="#k">Choosing k</a>'
        '<a href="#sizes">Cluster sizes</a><a href="#clusters">Sample clusters</a>'
        '<a href="#queries">Sample queries</a><a href="#duplicates">Near-duplicates</a></nav>',
        _summary_section(assignments, sizes, suggested_k, chosen_k, metrics),
        _sweep_section(sweep, suggested_k, chosen_k, elbow_src),
        _sizes_section(sizes, histogram),
        _clusters_section(clusters, sizes, thumbs),
        _queries_section(queries, thumbs),
        _duplicates_section(duplicates, groups, groups_left_out, thumbs),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{PAGE_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    report = out_dir / REPORT_NAME
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


def write_thumbnails(
    image_ids: Iterable[str], paths: Mapping[str, str], out_dir: Path, workers: int | None = None
) -> dict[str, Thumb]:
    """Write a JPEG thumbnail per distinct id into ``out_dir/thumbs`` in a thread pool; an id
    without a path or whose file does not decode gets the shared grey placeholder."""
    ids = list(dict.fromkeys(image_ids))
    folder = Path(out_dir) / THUMBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        made = list(pool.map(lambda i: _thumbnail(i, paths.get(i), folder), ids))
    if any(thumb.problem is not None for thumb in made):
        with atomic_path(folder / PLACEHOLDER_NAME) as tmp:
            placeholder = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE), _PLACEHOLDER_GREY)
            placeholder.save(tmp, "JPEG", quality=THUMB_QUALITY)
    return dict(zip(ids, made, strict=True))


def thumb_name(image_id: str) -> str:
    """The thumbnail's file name: a hash of the id, so any id gives a safe, stable name."""
    return hashlib.sha256(image_id.encode("utf-8")).hexdigest()[:24] + ".jpg"


def _thumbnail(image_id: str, path: str | None, folder: Path) -> Thumb:
    if path is None:
        return _placeholder("no path known for this image")
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return _placeholder(f"cannot read file: {e.strerror or e}")
    decoded = decode_image(raw, _thumb_target(raw))
    if not isinstance(decoded, Decoded):
        return _placeholder(decoded.reason)
    name = thumb_name(image_id)
    with atomic_path(folder / name) as tmp:
        Image.fromarray(decoded.pixels).save(tmp, "JPEG", quality=THUMB_QUALITY, optimize=True)
    height, width = decoded.pixels.shape[:2]
    return Thumb(src=f"{THUMBS_DIR}/{name}", width=width, height=height)


def _placeholder(problem: str) -> Thumb:
    return Thumb(f"{THUMBS_DIR}/{PLACEHOLDER_NAME}", THUMB_SIZE, THUMB_SIZE, problem)


def _thumb_target(raw: bytes) -> tuple[int, int]:
    """Thumbnail size (longest side THUMB_SIZE, never enlarged, upright) from the header alone."""
    try:
        with Image.open(io.BytesIO(raw), formats=DECODABLE_FORMATS) as im:
            width, height = im.size
            if im.getexif().get(_EXIF_ORIENTATION) in _ORIENTATIONS_SWAPPING_AXES:
                width, height = height, width
    except Exception:  # only picks a size; decode_image then says what is wrong with the file
        return THUMB_SIZE, THUMB_SIZE
    scale = min(1.0, THUMB_SIZE / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


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


def _sample_clusters(
    assignments: pd.DataFrame, sizes: pd.Series, n: int, members: int, seed: int
) -> dict[int, pd.DataFrame]:
    """Cluster id -> its ``members`` rows closest to the centroid, for n sampled clusters."""
    non_empty = [int(c) for c in sizes.index[sizes.to_numpy() > 0]]
    chosen = _sample(non_empty, n, np.random.default_rng([seed, 0]))
    rows = assignments[assignments["cluster"].isin(chosen)]
    rows = rows.sort_values(["cluster", "distance", "image_id"], kind="stable")
    heads = rows.groupby("cluster", sort=True).head(members)
    return {int(c): frame for c, frame in heads.groupby("cluster", sort=True)}


def _sample_queries(
    neighbours: pd.DataFrame, n: int, per_query: int, seed: int
) -> dict[str, pd.DataFrame]:
    """Query id -> its top ``per_query`` neighbours by rank, for n sampled queries."""
    ids = sorted(pd.unique(neighbours["image_id"]).tolist())
    chosen = _sample(ids, n, np.random.default_rng([seed, 1]))
    rows = neighbours[neighbours["image_id"].isin(chosen)].sort_values(
        ["image_id", "rank"], kind="stable"
    )
    heads = rows.groupby("image_id", sort=True).head(per_query)
    return {str(q): frame for q, frame in heads.groupby("image_id", sort=True)}


def _first_groups(
    duplicates: pd.DataFrame, max_groups: int, members: int
) -> tuple[dict[int, pd.DataFrame], int]:
    """The first ``max_groups`` groups (representative first, up to ``members`` each) and how
    many groups are left out."""
    group_ids = sorted(int(g) for g in pd.unique(duplicates["group_id"]))
    shown = group_ids[:max_groups]
    rows = duplicates[duplicates["group_id"].isin(shown)]
    rows = rows.sort_values(
        ["group_id", "is_representative"], ascending=[True, False], kind="stable"
    )
    return (
        {int(g): frame.head(members) for g, frame in rows.groupby("group_id", sort=True)},
        len(group_ids) - len(shown),
    )


def _shown_ids(
    clusters: dict[int, pd.DataFrame],
    queries: dict[str, pd.DataFrame] | None,
    groups: dict[int, pd.DataFrame] | None,
) -> list[str]:
    ids: list[str] = []
    for frame in clusters.values():
        ids += frame["image_id"].astype(str).tolist()
    for query, frame in (queries or {}).items():
        ids += [query, *frame["neighbour_id"].astype(str).tolist()]
    for frame in (groups or {}).values():
        ids += frame["image_id"].astype(str).tolist()
    return ids


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _images(n: int) -> str:
    return f"{n:,} image" if n == 1 else f"{n:,} images"


def _number(value: object) -> str:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return _e(value)
    number = float(value)
    if np.isnan(number):
        return "–"
    if number.is_integer() and abs(number) < 1e15:
        return f"{int(number):,}"
    return f"{number:,.1f}" if abs(number) >= 1000 else f"{number:.4g}"


def tile(image_id: str, thumb: Thumb, note: str = "", css: str = "") -> str:
    """One thumbnail figure with its id and a note; unreadable images are marked."""
    classes = " ".join(c for c in ("tile", css, "bad" if thumb.problem else "") if c)
    hover = image_id if thumb.problem is None else f"{image_id}: {thumb.problem}"
    extra = "" if thumb.problem is None else '<span class="val">unreadable</span>'
    value = f'<span class="val">{_e(note)}</span>' if note else ""
    return (
        f'<figure class="{classes}"><div class="frame"><img src="{_e(thumb.src)}"'
        f' width="{thumb.width}" height="{thumb.height}" alt="{_e(image_id)}"'
        f' title="{_e(hover)}" loading="lazy"></div>'
        f"<figcaption>{_e(image_id)}{value}{extra}</figcaption></figure>"
    )


def _key_values(rows: Iterable[tuple[str, object]]) -> str:
    cells = "".join(f'<tr><td class="key">{_e(k)}</td><td>{_number(v)}</td></tr>' for k, v in rows)
    return f"<table>{cells}</table>"


def _summary_section(
    assignments: pd.DataFrame,
    sizes: pd.Series,
    suggested_k: int | None,
    chosen_k: int,
    metrics: Mapping[str, float],
) -> str:
    rows: list[tuple[str, object]] = [
        ("images", len(assignments)),
        ("clusters (k used)", chosen_k),
        ("suggested k", "none (no sweep)" if suggested_k is None else suggested_k),
        ("empty clusters", int((sizes == 0).sum())),
        *metrics.items(),
    ]
    return f'<section id="summary"><h2>Summary</h2>{_key_values(rows)}</section>'


def _sweep_section(
    sweep: pd.DataFrame | None, suggested_k: int | None, chosen_k: int, elbow_src: str | None
) -> str:
    parts = ['<section id="k"><h2>Choosing k</h2>']
    if elbow_src is not None:
        parts.append(f'<p><img class="plot" src="{_e(elbow_src)}" alt="elbow and silhouette"></p>')
    if sweep is None or sweep.empty:
        parts.append('<p class="muted">No k sweep in this run: k came from the config.</p>')
    else:
        parts.append(
            '<p class="muted">Suggested k highlighted; ◀ marks the k used.</p>'
            "<table><tr><th>k</th><th>inertia</th><th>silhouette</th></tr>"
        )
        for row in sweep.sort_values("k").itertuples(index=False):
            k = int(row.k)
            css = " ".join(
                c for c, on in (("suggested", k == suggested_k), ("chosen", k == chosen_k)) if on
            )
            silhouette = float(row.silhouette)
            parts.append(
                f'<tr class="{css}"><td>{k}</td><td>{_number(float(row.inertia))}</td>'
                f"<td>{'–' if np.isnan(silhouette) else f'{silhouette:.4f}'}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</section>")
    return "".join(parts)


def _sizes_section(sizes: pd.Series, histogram: Path | None) -> str:
    if histogram is None:
        return (
            '<section id="sizes"><h2>Cluster sizes</h2><p class="muted">No clusters.</p></section>'
        )
    values = sizes.to_numpy()
    stats = (
        f"smallest {values.min():,}, median {np.median(values):,.1f}, largest {values.max():,}"
        f" images per cluster over {len(values):,} clusters"
    )
    return (
        f'<section id="sizes"><h2>Cluster sizes</h2><p class="muted">{stats}</p>'
        f'<p><img class="plot" src="{_e(histogram.name)}" alt="histogram of cluster sizes"></p>'
        "</section>"
    )


def _clusters_section(
    clusters: dict[int, pd.DataFrame], sizes: pd.Series, thumbs: Mapping[str, Thumb]
) -> str:
    parts = [
        '<section id="clusters"><h2>Sample clusters</h2>',
        f'<p class="muted">{len(clusters)} of {int((sizes > 0).sum())} non-empty clusters, drawn at'
        " random; members closest to the centroid first, with their distance to it.</p>",
    ]
    for cluster, frame in clusters.items():
        parts.append(
            f"<h3>Cluster {cluster} · {_images(int(sizes[cluster]))}"
            f' (showing {len(frame)})</h3><div class="grid">'
        )
        for row in frame.itertuples(index=False):
            image_id = str(row.image_id)
            parts.append(tile(image_id, thumbs[image_id], f"{float(row.distance):.3f}"))
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _queries_section(queries: dict[str, pd.DataFrame] | None, thumbs: Mapping[str, Thumb]) -> str:
    parts = ['<section id="queries"><h2>Sample queries</h2>']
    if queries is None:
        parts.append('<p class="muted">No bulk search in this run.</p></section>')
        return "".join(parts)
    parts.append(
        f'<p class="muted">{len(queries)} catalog images drawn at random (blue frame), each'
        " followed by its nearest neighbours with rank and cosine score.</p>"
    )
    for query, frame in queries.items():
        parts.append(f'<div class="grid">{tile(query, thumbs[query], "query", "query")}')
        parts.append('<span class="arrow">→</span>')
        for row in frame.itertuples(index=False):
            neighbour = str(row.neighbour_id)
            note = f"#{int(row.rank)} · {float(row.score):.3f}"
            parts.append(tile(neighbour, thumbs[neighbour], note))
        parts.append("</div><br>")
    parts.append("</section>")
    return "".join(parts)


def _duplicates_section(
    duplicates: pd.DataFrame | None,
    groups: dict[int, pd.DataFrame] | None,
    left_out: int,
    thumbs: Mapping[str, Thumb],
) -> str:
    parts = ['<section id="duplicates"><h2>Near-duplicate groups</h2>']
    if duplicates is None or groups is None:
        parts.append('<p class="muted">Near-duplicates were not computed in this run.</p>')
    elif not groups:
        parts.append('<p class="muted">No near-duplicate groups found.</p>')
    else:
        total = len(groups) + left_out
        parts.append(
            f'<p class="muted">{total:,} groups holding {len(duplicates):,} images;'
            " the representative (green frame) comes first.</p>"
        )
        sizes = duplicates.groupby("group_id").size()
        for group, frame in groups.items():
            size = int(sizes[group])
            more = f", showing {len(frame)}" if len(frame) < size else ""
            parts.append(f'<h3>Group {group} · {_images(size)}{more}</h3><div class="grid">')
            for row in frame.to_dict("records"):
                image_id = str(row["image_id"])
                rep = bool(row["is_representative"])
                notes = ["representative"] if rep else []
                if "mean_similarity" in row:
                    notes.append(f"{float(row['mean_similarity']):.3f}")
                parts.append(
                    tile(image_id, thumbs[image_id], " · ".join(notes), "rep" if rep else "")
                )
            parts.append("</div>")
        if left_out:
            parts.append(f"<p><strong>{left_out:,} more groups not shown.</strong></p>")
    parts.append("</section>")
    return "".join(parts)


def write_run_report(
    run: RunLayout,
    catalog: pd.DataFrame,
    diag: Diagnostics,
    k: int,
    metrics: Mapping[str, float],
    title: str,
) -> Path:
    """report.html of a run folder from its own files; sample queries come from the first
    neighbour shard, so the report stays bounded."""
    shards = run.bulk.neighbour_shards()
    duplicates = run.bulk.duplicates
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
        metrics=metrics,
        elbow_png=run.diagnostics.plot.relative_to(run.root).as_posix(),
    )
