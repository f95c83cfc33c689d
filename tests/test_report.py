import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.imagefactory import write_bad_images, write_good_images, write_large_jpeg
from vasrch.index.clustering import plot_sweep
from vasrch.pages.report import write_report
from vasrch.pages.thumbnails import PLACEHOLDER_NAME, THUMB_SIZE, thumb_name

ODD_ID = '<b>&"x.jpg'


class _Tags(HTMLParser):
    """Every img (attributes decoded as a browser would), every href in a page, and the href of
    the link around each img (None when it has none)."""

    def __init__(self):
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.hrefs: list[str] = []
        self.img_links: list[str | None] = []
        self._link: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs)
            self.img_links.append(self._link)
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "a":
            self._link = attrs.get("href")

    def handle_endtag(self, tag):
        if tag == "a":
            self._link = None


def parse(page: str) -> _Tags:
    tags = _Tags()
    tags.feed(page)
    return tags


def section(page: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', page, re.S)
    assert match, f"section {name} missing"
    return match.group(1)


def catalog(tmp_path: Path, n: int = 40, k: int = 5, seed: int = 0):
    """A real image catalog plus bulk-like tables over it, and a run folder with an elbow plot."""
    paths = write_good_images(tmp_path / "catalog", n=n, seed=seed)
    ids = [p.name for p in paths]
    rng = np.random.default_rng(seed)
    assignments = pd.DataFrame(
        {"image_id": ids, "cluster": np.arange(n) % k, "distance": rng.random(n).round(4)}
    )
    rows = []
    for i, query in enumerate(ids):
        others = [ids[(i + j) % n] for j in range(1, 7)]
        rows += [(query, r, nb, 0.99 - 0.05 * r) for r, nb in enumerate(others, start=1)]
    neighbours = pd.DataFrame(rows, columns=["image_id", "rank", "neighbour_id", "score"])
    duplicates = pd.DataFrame(
        {
            "group_id": [0, 0, 0, 1, 1],
            "image_id": [ids[0], ids[1], ids[2], ids[3], ids[4]],
            "is_representative": [True, False, False, True, False],
            "score_to_representative": [1.0, 0.96, 0.95, 1.0, 0.99],
        }
    )
    sweep = pd.DataFrame(
        {"k": [2, 3, 4, 5, 6], "inertia": [90.0, 60.0, 40.0, 35.0, 33.0]}
        | {"silhouette": [0.2, 0.3, 0.45, 0.4, np.nan]}
    )
    run = tmp_path / "runs" / "r1"
    plot_sweep(sweep, 4, run / "diagnostics" / "elbow_silhouette.png")
    return {
        "out_dir": run / "bulk",
        "title": "Run r1",
        "sweep": sweep,
        "suggested_k": 4,
        "chosen_k": k,
        "assignments": assignments,
        "paths": {i: str(p) for i, p in zip(ids, paths, strict=True)},
        "neighbours": neighbours,
        "duplicates": duplicates,
        "metrics": {"bulk seconds": 1.2345, "near-duplicate groups": 2.0},
        "elbow_png": "../diagnostics/elbow_silhouette.png",
    }


def test_report_has_every_section_and_only_the_thumbnails_it_shows(tmp_path):
    args = catalog(tmp_path)
    report = write_report(
        **args, sample_clusters=2, members_per_cluster=3, sample_queries=2, neighbours_per_query=3
    )
    assert report == args["out_dir"] / "report.html"
    page = report.read_text(encoding="utf-8")
    for name in ("summary", "k", "sizes", "clusters", "queries", "duplicates"):
        section(page, name)
    assert "bulk seconds" in page and "1.234" in page
    # The sweep table highlights the suggested k and marks the one used.
    assert re.search(r'<tr class="suggested"><td>4</td>', page)
    assert re.search(r'<tr class="chosen"><td>5</td>', page)
    assert Image.open(args["out_dir"] / "cluster_sizes.png").format == "PNG"

    # Sampled clusters show their members closest to the centroid first.
    clusters = section(page, "clusters")
    shown = re.findall(r"<h3>Cluster (\d+) · (\d+) images \(showing (\d+)\)</h3>", clusters)
    assert len(shown) == 2
    table = args["assignments"]
    for cluster, size, count in shown:
        members = table[table["cluster"] == int(cluster)]
        assert int(size) == len(members) and int(count) == 3
        block = clusters.split(f"<h3>Cluster {cluster} ")[1].split("<h3>")[0]
        alts = [img["alt"] for img in parse(block).imgs]
        assert alts == members.sort_values("distance")["image_id"].head(3).tolist()

    # Two queries with three neighbours each, in rank order.
    queries = parse(section(page, "queries")).imgs
    assert len(queries) == 2 * 4
    neighbours = args["neighbours"]
    for start in (0, 4):
        query = queries[start]["alt"]
        expected = neighbours[neighbours["image_id"] == query].sort_values("rank")
        got = [img["alt"] for img in queries[start + 1 : start + 4]]
        assert got == expected["neighbour_id"].head(3).tolist()

    # Both duplicate groups, representative first; every other member's score is labelled.
    groups = parse(section(page, "duplicates")).imgs
    assert [img["alt"] for img in groups] == args["duplicates"]["image_id"].tolist()
    block = section(page, "duplicates")
    assert block.count('<span class="val">representative</span>') == 2
    for score in ("0.960", "0.950", "0.990"):
        assert f'<span class="val">score to representative {score}</span>' in block

    # One thumbnail per distinct image shown, each a small JPEG no larger than THUMB_SIZE.
    shown_ids = {img["alt"] for img in parse(page).imgs if img["src"].startswith("thumbs/")}
    thumbs = sorted((args["out_dir"] / "thumbs").iterdir())
    assert {t.name for t in thumbs} == {thumb_name(i) for i in shown_ids}
    assert len(thumbs) < len(table)
    for thumb in thumbs:
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and max(im.size) <= THUMB_SIZE
        assert thumb.stat().st_size < 12_000


def test_same_seed_same_page_other_seed_other_sample(tmp_path):
    args = catalog(tmp_path)
    first = write_report(**args, seed=3).read_text(encoding="utf-8")
    again = write_report(**args, seed=3).read_text(encoding="utf-8")
    other = write_report(**args, seed=4).read_text(encoding="utf-8")
    assert first == again
    assert section(first, "queries") != section(other, "queries")


def test_thumbnails_are_upright_and_shrunk_never_enlarged(tmp_path):
    big = write_large_jpeg(tmp_path / "big.jpg", width=1500, height=1000)
    small = write_good_images(tmp_path / "imgs", n=7)  # index 6 is a 96x72 JPEG stored rotated
    assert small[6].name.startswith("jpg_exif6")
    ids = ["big", "rotated"]
    write_report(
        tmp_path / "out",
        title="t",
        sweep=None,
        suggested_k=None,
        chosen_k=1,
        assignments=pd.DataFrame({"image_id": ids, "cluster": [0, 0], "distance": [0.1, 0.2]}),
        paths={"big": str(big), "rotated": str(small[6])},
        neighbours=None,
        duplicates=None,
        metrics={},
    )
    with Image.open(tmp_path / "out" / "thumbs" / thumb_name("big")) as im:
        assert im.size == (128, 85)
    with Image.open(tmp_path / "out" / "thumbs" / thumb_name("rotated")) as im:
        assert im.size == (96, 72)


def test_thumbnails_link_their_full_images_by_relative_paths(tmp_path):
    args = catalog(tmp_path)
    page = write_report(**args).read_text(encoding="utf-8")
    tags = parse(page)
    linked = [
        (img["alt"], href)
        for img, href in zip(tags.imgs, tags.img_links, strict=True)
        if img["src"].startswith("thumbs/")
    ]
    assert len(linked) > 20
    for image_id, href in linked:
        assert href is not None and not re.match(r"(/|[a-z]+:)", href), href
        target = (args["out_dir"] / unquote(href)).resolve()
        assert target == Path(args["paths"][image_id]).resolve()
    assert all(href.startswith("#") for href in tags.hrefs if href not in dict(linked).values())


def test_links_resolve_inside_a_copy_and_no_absolute_path_appears(tmp_path):
    args = catalog(tmp_path / "origin")
    write_report(**args)
    originals = {Path(p).name: Path(p).read_bytes() for p in args["paths"].values()}
    # `cp -r` keeps the symlinks to the catalog: the copy opens the originals while they stay.
    kept = tmp_path / "kept" / "r1"
    kept.parent.mkdir()
    subprocess.run(["cp", "-r", str(tmp_path / "origin" / "runs" / "r1"), str(kept)], check=True)
    # A copy that follows symlinks takes the few full images shown: it opens them anywhere.
    copy = shutil.copytree(tmp_path / "origin" / "runs" / "r1", tmp_path / "elsewhere" / "r1")
    kept_page = parse((kept / "bulk" / "report.html").read_text(encoding="utf-8"))
    for href, img in zip(kept_page.img_links, kept_page.imgs, strict=True):
        if href is not None:
            assert (kept / "bulk" / unquote(href)).read_bytes() == originals[img["alt"]]
    shutil.rmtree(tmp_path / "origin")  # neither the originals nor the first run are reachable
    page = (copy / "bulk" / "report.html").read_text(encoding="utf-8")
    tags = parse(page)
    sources = [img["src"] for img in tags.imgs]
    assert len(sources) > 20
    assert "../diagnostics/elbow_silhouette.png" in sources
    for src in sources:
        target = (copy / "bulk" / src).resolve()
        assert target.is_relative_to(copy.resolve()) and target.is_file(), src
    # Thumbnails link the full images inside the copy; every other link is a jump.
    images = set(filter(None, tags.img_links))
    assert len(images) > 20 and all(href.startswith("images/") for href in images)
    for href, img in zip(tags.img_links, tags.imgs, strict=True):
        if href is not None:
            target = copy / "bulk" / unquote(href)
            assert not target.is_symlink() and target.read_bytes() == originals[img["alt"]]
    assert all(href.startswith("#") for href in tags.hrefs if href not in images)
    assert str(tmp_path) not in page
    assert not re.search(r"""(src|href)=["']?(/|[a-z]+:)""", page)
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_odd_ids_are_escaped_everywhere(tmp_path):
    folder = tmp_path / "catalog"
    folder.mkdir()
    odd = folder / ODD_ID
    Image.new("RGB", (60, 40), (200, 30, 30)).save(odd, "JPEG")
    plain = folder / "plain.jpg"
    Image.new("RGB", (60, 40), (30, 30, 200)).save(plain, "JPEG")
    ids = [ODD_ID, "plain.jpg"]
    report = write_report(
        tmp_path / "out",
        title="<script>alert(1)</script> & co",
        sweep=None,
        suggested_k=None,
        chosen_k=1,
        assignments=pd.DataFrame({"image_id": ids, "cluster": [0, 0], "distance": [0.1, 0.2]}),
        paths={ODD_ID: str(odd), "plain.jpg": str(plain)},
        neighbours=pd.DataFrame(
            {"image_id": ids, "rank": [1, 1], "neighbour_id": ids[::-1], "score": [0.9, 0.9]}
        ),
        duplicates=pd.DataFrame(
            {"group_id": [0, 0], "image_id": ids, "is_representative": [True, False]}
        ),
        metrics={"<odd metric>": 1.0},
    )
    page = report.read_text(encoding="utf-8")
    assert ODD_ID not in page and "<script>" not in page and "<odd metric>" not in page
    assert "&lt;b&gt;&amp;&#34;x.jpg" in page  # markupsafe writes a quote as &#34;
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    odd_imgs = [img for img in parse(page).imgs if img.get("alt") == ODD_ID]
    assert len(odd_imgs) == 4  # cluster, query, neighbour of the other query, duplicate group
    assert {img["src"] for img in odd_imgs} == {f"thumbs/{thumb_name(ODD_ID)}"}
    assert (tmp_path / "out" / "thumbs" / thumb_name(ODD_ID)).is_file()


def test_undecodable_missing_and_unknown_images_get_the_grey_placeholder(tmp_path):
    bad = write_bad_images(tmp_path / "bad")
    good = write_good_images(tmp_path / "good", n=2)
    paths = {p.name: str(p) for p in [*bad, *good]}
    paths["gone.jpg"] = str(tmp_path / "gone.jpg")
    ids = [*paths, "no-path.jpg"]
    report = write_report(
        tmp_path / "out",
        title="t",
        sweep=None,
        suggested_k=None,
        chosen_k=1,
        assignments=pd.DataFrame(
            {"image_id": ids, "cluster": 0, "distance": np.linspace(0, 1, len(ids))}
        ),
        paths=paths,
        neighbours=None,
        duplicates=None,
        metrics={},
        members_per_cluster=len(ids),
    )
    imgs = {
        img["alt"]: img for img in parse(report.read_text(encoding="utf-8")).imgs if "alt" in img
    }
    placeholder = f"thumbs/{PLACEHOLDER_NAME}"
    for path, fragment in bad.items():
        assert imgs[path.name]["src"] == placeholder
        assert fragment in imgs[path.name]["title"]
    assert imgs["gone.jpg"]["src"] == placeholder and "cannot read" in imgs["gone.jpg"]["title"]
    assert imgs["no-path.jpg"]["src"] == placeholder
    for path in good:
        assert imgs[path.name]["src"] == f"thumbs/{thumb_name(path.name)}"
    with Image.open(tmp_path / "out" / placeholder) as im:
        assert im.format == "JPEG"
        grey = np.asarray(im.convert("RGB"), dtype=float)
    assert grey.std() < 2 and 150 < grey.mean() < 230


def test_duplicate_groups_are_capped_and_absent_parts_are_explained(tmp_path):
    paths = write_good_images(tmp_path / "catalog", n=6)
    ids = [p.name for p in paths]
    groups = pd.DataFrame(
        {
            "group_id": np.repeat(np.arange(60), 2),
            "image_id": [ids[i % 6] for i in range(120)],
            "is_representative": np.tile([True, False], 60),
        }
    )
    page = write_report(
        tmp_path / "out",
        title="t",
        sweep=None,
        suggested_k=None,
        chosen_k=8,
        assignments=pd.DataFrame({"image_id": ids, "cluster": 0, "distance": 0.5}),
        paths={i: str(p) for i, p in zip(ids, paths, strict=True)},
        neighbours=None,
        duplicates=groups,
        metrics={},
    ).read_text(encoding="utf-8")
    duplicates = section(page, "duplicates")
    assert len(re.findall(r"<h3>Group \d+ ", duplicates)) == 50
    # numbered from 1 where a person reads them
    assert "<h3>Group 1 " in duplicates and "<h3>Group 50 " in duplicates
    assert "<h3>Group 0 " not in duplicates
    assert "10 more groups not shown" in duplicates
    assert "No bulk search" in section(page, "queries")
    assert "No k sweep" in section(page, "k")
    assert "<td>7</td>" in section(page, "summary")  # seven of the eight clusters are empty


def test_bad_arguments_are_refused_with_a_clear_message(tmp_path):
    args = catalog(tmp_path, n=10)
    with pytest.raises(ValueError, match="absolute path"):
        write_report(**args | {"elbow_png": str(tmp_path / "runs/r1/diagnostics/x.png")})
    with pytest.raises(ValueError, match="outside the run folder"):
        write_report(**args | {"elbow_png": "../../elsewhere.png"})
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        write_report(**args | {"elbow_png": "../diagnostics/missing.png"})
    with pytest.raises(ValueError, match="'distance'"):
        write_report(**args | {"assignments": args["assignments"].drop(columns="distance")})
    with pytest.raises(ValueError, match="members_per_cluster"):
        write_report(**args, members_per_cluster=0)
    assert not (args["out_dir"] / "report.html").exists()


def _screenshot(page: Path, png: Path, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            shutil.which("chromium"),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            "--window-size=1200,2000",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian package chromium missing")
def test_report_renders_in_headless_chromium(tmp_path):
    args = catalog(tmp_path, n=60, k=6)
    report = write_report(**args)
    png = tmp_path / "screenshot.png"
    result = _screenshot(report, png, tmp_path / "profile")
    assert png.is_file(), result.stderr[-2000:]
    with Image.open(png) as im:
        assert im.size == (1200, 2000)
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.std() > 10  # text, plots and thumbnails, not a blank page
    # Thumbnails rendered: the top of the page holds many distinct colours, not just text.
    colours = np.unique(np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) > 1000


def test_summary_labels_a_runs_figures_as_people_read_them(tmp_path):
    """The summary showed flat field names (`held_out_precision_at_10`), where the CLI prints
    readable labels; counts show as whole numbers."""
    args = catalog(tmp_path)
    args["metrics"] = {
        "probes": 7,
        "recall_at_10": 0.96,
        "leave_one_out_queries": 200.0,
        "held_out_queries": 24.0,
        "held_out_precision_at_10": 0.7621,
        "held_out_exact_precision_at_10": 0.759,
    }
    summary = section(write_report(**args).read_text(encoding="utf-8"), "summary")
    rows = dict(re.findall(r'<td class="key">([^<]*)</td><td>([^<]*)</td>', summary))
    assert rows["recall@10 (calibration)"] == "0.96"
    assert rows["queries (leave-one-out)"] == "200" and rows["queries (held-out)"] == "24"
    assert rows["precision@10 (held-out)"] == "0.7621"
    assert rows["exact search&#39;s precision@10 (held-out)"] == "0.759"
    assert rows["probes"] == "7" and "_at_" not in summary
