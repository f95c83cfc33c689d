"""Products: catalog manifests, product-level answers, filters, product neighbours in bulk."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.configs import write_config
from vasrch.bulk.neighbours import product_neighbours
from vasrch.catalog.product_manifest import ManifestError, load_manifest
from vasrch.catalog.products import Products, parse_filters, web_link
from vasrch.catalog.scan import ScanOptions, scan_catalog
from vasrch.index.clustering import l2_normalise, train_kmeans
from vasrch.index.search_index import build_index


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_manifest_rows_that_cannot_be_used_are_rejected_with_their_reason(tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    root.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (root / name).write_bytes(b"x")
    manifest = write_manifest(
        tmp_path / "products.csv",
        [
            {"product_id": "P1", "image": "a.jpg", "title": "first"},
            {"product_id": "P1", "image": "a.jpg", "title": "first"},
            {"product_id": "P2", "image": "./a.jpg", "title": "second"},
            {"product_id": "", "image": "b.jpg", "title": "no id"},
            {"product_id": "P3", "image": "../outside.jpg", "title": "escapes"},
            {"product_id": "P4", "image": str(root / "b.jpg"), "title": "absolute"},
            {"product_id": "P5", "image": "", "title": "no image"},
            {"product_id": "P6", "image": "b.jpg", "title": "ok"},
        ],
    )
    loaded = load_manifest(manifest, root)
    assert loaded.rows[["image_id", "product_id"]].values.tolist() == [
        ["a.jpg", "P1"],
        ["b.jpg", "P6"],
    ]
    assert loaded.metadata == ["title"]
    reasons = dict(zip(loaded.rejected["reason"].str[:20], loaded.rejected["reason"], strict=True))
    text = " | ".join(reasons.values())
    for fragment in (
        "row 3: repeats an earlier row",
        "row 4: photo already listed for product 'P1'",
        "row 5: empty product_id",
        "row 6: path leaves the catalog folder",
        "row 7: absolute path",
        "row 8: empty image",
    ):
        assert fragment in text, fragment
    allowed = load_manifest(manifest, root, allow_absolute=True)
    assert str(root / "b.jpg") in allowed.rows["image_id"].tolist()


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["product_id", "title"], "missing required column"),
        (["product_id", "image", "score"], "reserved"),
    ],
)
def test_unusable_manifests_are_one_clear_error(tmp_path: Path, columns, message) -> None:
    path = tmp_path / "products.csv"
    path.write_text(",".join(columns) + "\n" + ",".join("x" for _ in columns) + "\n")
    with pytest.raises(ManifestError, match=message):
        load_manifest(path, tmp_path)
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "absent.csv", tmp_path)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "bad.parquet", tmp_path)


def test_scan_with_a_parquet_manifest_keeps_metadata_and_rejects_missing_photos(
    tmp_path: Path,
) -> None:
    root = tmp_path / "catalog"
    (root / "shoes").mkdir(parents=True)
    (root / "shoes" / "a.jpg").write_bytes(b"a")
    (root / "shoes" / "b.jpg").write_bytes(b"b")
    (root / "unlisted.jpg").write_bytes(b"c")
    path = tmp_path / "products.parquet"
    pd.DataFrame(
        {
            "product_id": ["S1", "S1", "S2"],
            "image": ["shoes/a.jpg", "shoes/b.jpg", "shoes/gone.jpg"],
            "category": ["shoes", "shoes", "shoes"],
            "url": ["https://shop/s1", "https://shop/s1", "https://shop/s2"],
        }
    ).to_parquet(path)
    scan = scan_catalog(root, options=ScanOptions(manifest=path))
    assert scan.table["image_id"].tolist() == ["shoes/a.jpg", "shoes/b.jpg"]
    assert scan.table["product_id"].tolist() == ["S1", "S1"]
    assert scan.table["url"].tolist() == ["https://shop/s1"] * 2
    assert scan.rejected.values.tolist() == [
        [
            "shoes/gone.jpg",
            str(root / "shoes/gone.jpg"),
            4,
            "products.parquet row 4: listed in the manifest but not found",
        ]
    ]
    folder = scan_catalog(root)
    assert folder.table.set_index("image_id")["category"].to_dict() == {
        "shoes/a.jpg": "shoes",
        "shoes/b.jpg": "shoes",
        "unlisted.jpg": "",
    }
    assert (folder.table["product_id"] == folder.table["image_id"]).all()


def product_index(products: int = 300, per: int = 3, dim: int = 16, k: int = 12):
    """Photos of `products` products (`per` each, close to each other), clustered."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(products, dim))
    x = l2_normalise(np.repeat(centres, per, axis=0) + 0.3 * rng.normal(size=(products * per, dim)))
    ids = np.array([f"img{i:05d}" for i in range(len(x))], dtype=object)
    owners = np.repeat([f"P{p:04d}" for p in range(products)], per).astype(object)
    model = train_kmeans(x, k, seed=0)
    index = build_index(ids, x, model.cluster_centers_, model.labels_, "fp")
    order = pd.Series(owners, index=ids).reindex(index.ids).to_numpy(object)
    return x, ids, owners, index, order


def exact_products(x, owners, queries, top_n, exclude=None, allowed=None):
    """Reference: products ranked by their best photo's cosine, by brute force."""
    scores = queries @ x.T
    frame = pd.DataFrame(scores.T)
    frame["product"] = owners
    best = frame.groupby("product").max()
    answers = []
    for q in range(len(queries)):
        column = best[q]
        if allowed is not None:
            column = column[column.index.isin(allowed)]
        if exclude is not None:
            column = column.drop(exclude[q], errors="ignore")
        answers.append(column.sort_values(ascending=False).index[:top_n].tolist())
    return answers


def test_answers_are_distinct_products_ranked_by_their_best_photo() -> None:
    from dataclasses import replace

    x, ids, owners, index, order = product_index()
    index = replace(index, products=order)
    queries = x[:40]
    rows, _ = index.search_rows(queries, 10, index.k, index.rows_of(list(ids[:40])))
    found = [[index.products[r] for r in row] for row in rows]
    assert all(len(set(row)) == 10 for row in found)
    # the query photo's own product (its other photos too) is left out
    assert all(owners[q] not in found[q] for q in range(40))
    assert found == exact_products(x, owners, queries, 10, exclude=owners[:40])
    # probes=1 still fills ten distinct products by ranking more photos
    one_probe, _ = index.search_rows(queries, 10, 1)
    assert (one_probe >= 0).all()
    assert all(len({index.products[r] for r in row}) == 10 for row in one_probe)


def test_filtered_search_returns_top_n_matching_products_when_they_exist() -> None:
    from dataclasses import replace

    x, ids, owners, index, order = product_index()
    index = replace(index, products=order)
    catalog = pd.DataFrame(
        {
            "image_id": ids,
            "product_id": owners,
            "colour": np.where(np.arange(len(ids)) // 3 % 20 == 0, "red", "blue"),
        }
    )
    products = Products.from_catalog(catalog)
    allowed = products.allowed(index.ids, {"colour": ["red"]})
    red = set(products.matching({"colour": "red"}))
    assert len(red) == 15
    queries = x[:60]
    rows, _ = index.search_rows(queries, 10, 1, allowed=allowed)
    found = [[index.products[r] for r in row if r >= 0] for row in rows]
    assert all(len(row) == 10 and set(row) <= red for row in found)
    exact = exact_products(x, owners, queries, 10, allowed=red)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(found, exact, strict=True)])
    assert recall >= 0.95
    # more wanted than exist: every matching product, then padding
    rows, _ = index.search_rows(queries[:3], 20, 1, allowed=allowed)
    assert ((rows >= 0).sum(axis=1) == 15).all()
    with pytest.raises(ValueError, match=r"unknown filter column 'size'.*colour"):
        products.check_filters({"size": "M"})


def test_products_are_held_without_a_python_object_a_photo() -> None:
    catalog = pd.DataFrame(
        {
            "image_id": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
            "product_id": ["P1", "P1", "P2", "P3"],
            "title": ["shirt", "ignored: P1's first photo names it", None, "hat"],
            "stock": pd.array([3, 9, None, 1], dtype="Int64"),
            "price": [10.5, 11.0, 2.0, np.nan],
        }
    )
    products = Products.from_catalog(catalog)
    assert products.product_rows.dtype == np.int32 and products.several_photos
    assert object not in set(products.metadata.dtypes)
    described = products.describe(["c.jpg", "a.jpg", "nowhere.jpg"]).to_dict("records")
    assert described == [
        {"product_id": "P2", "title": "", "stock": None, "price": 2.0},
        {"product_id": "P1", "title": "shirt", "stock": 3, "price": 10.5},
        {"product_id": "", "title": "", "stock": None, "price": None},
    ]
    assert products.of(["d.jpg", "nowhere.jpg"]).tolist() == ["P3", None]
    assert products.matching({"price": "10.5", "title": ["shirt", "hat"]}).tolist() == ["P1"]
    assert products.allowed(["b.jpg", "d.jpg", "x"], {"product_id": "P1"}).tolist() == [
        True,
        False,
        False,
    ]


def test_only_web_urls_become_links() -> None:
    assert web_link("https://shop.example/p/1") == "https://shop.example/p/1"
    assert web_link(" HTTP://shop.example/p/1 ") == "HTTP://shop.example/p/1"
    for unsafe in ("javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,x", "", None):
        assert web_link(unsafe) == ""


def test_filter_arguments_parse_into_column_values() -> None:
    assert parse_filters(["category=shoes,boots", "colour=red", "category=hats"]) == {
        "category": ["shoes", "boots", "hats"],
        "colour": ["red"],
    }
    with pytest.raises(ValueError, match="column=value"):
        parse_filters(["category"])


def test_product_neighbours_merge_each_products_photos() -> None:
    frame = pd.DataFrame(
        {
            "image_id": ["a1", "a1", "a2", "a2", "b1"],
            "product_id": ["A", "A", "A", "A", "B"],
            "rank": [1, 2, 1, 2, 1],
            "neighbour_id": ["b1", "c1", "c2", "b1", "a2"],
            "neighbour_product_id": ["B", "C", "C", "B", "A"],
            "score": [0.7, 0.5, 0.9, 0.6, 0.7],
        }
    )
    merged = product_neighbours(frame, top_n=5)
    a = merged[merged["product_id"] == "A"]
    assert a[["rank", "neighbour_product_id", "score", "image_id", "neighbour_image_id"]].to_dict(
        "records"
    ) == [
        {
            "rank": 1,
            "neighbour_product_id": "C",
            "score": 0.9,
            "image_id": "a2",
            "neighbour_image_id": "c2",
        },
        {
            "rank": 2,
            "neighbour_product_id": "B",
            "score": 0.7,
            "image_id": "a1",
            "neighbour_image_id": "b1",
        },
    ]


@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory, demo_catalog):
    """A run trained on the demo catalog listed as products of two photos each."""
    from vasrch.orchestration.flows.train import train_flow

    tmp = tmp_path_factory.mktemp("manifest")
    images = sorted(p.relative_to(demo_catalog).as_posix() for p in demo_catalog.glob("*/*"))
    rows = [
        {
            "product_id": f"SKU-{i // 2:03d}",
            "image": image,
            "category": image.split("/")[0],
            "title": f"{image.split('/')[0]} number {i // 2} (reseller) #{i // 2} | <b>x</b>",
            "url": f"https://shop.example/p/{i // 2}",
            "price": f"{10 + i // 2}.5",
        }
        for i, image in enumerate(images)
    ]
    # Two rows that cannot be used: a repeat of the first (row 50) and a missing photo (row 51).
    bad = [rows[0], {**rows[1], "product_id": "SKU-GONE", "image": "hat/gone.jpg"}]
    manifest = write_manifest(tmp / "products.csv", rows + bad)
    cfg = write_config(
        tmp,
        {
            "catalog": {"path": str(demo_catalog), "manifest": "products.csv"},
            "workspace": "ws",
            "features": {"shard_size": 16},
            "clustering": {"diagnostics": {"k_min": 2, "k_max": 8, "k_step": 2}},
            "evaluation": {"sample": 24},
            "search": {"probes": 2},
            "bulk": {"enabled": True, "top_n": 4, "csv": True},
        },
    )
    return cfg, manifest, pd.DataFrame(rows), train_flow(str(cfg))


def test_a_manifest_run_answers_with_products_and_filters(
    manifest_run, tmp_path: Path, capsys
) -> None:
    from vasrch.cli import main
    from vasrch.search.searcher import open_run

    cfg, _, rows, result = manifest_run
    run = result.run_dir
    searcher = open_run(run.parents[1])
    assert searcher.products.several_photos
    image_id = rows["image"].iloc[0]
    table = searcher.to_table(searcher.search_ids([image_id], top_n=6), [image_id])
    assert list(table.columns) == [
        "query",
        "rank",
        "product_id",
        "score",
        "image_id",
        "category",
        "title",
        "url",
        "price",
    ]
    assert table["product_id"].is_unique and "SKU-000" not in set(table["product_id"])
    filtered = searcher.to_table(
        searcher.search_ids([image_id], top_n=6, filters={"category": ["mug", "hat"]}),
        [image_id],
    )
    assert len(filtered) == 6 and set(filtered["category"]) <= {"mug", "hat"}

    assert main(["query", str(tmp_path / "absent.jpg"), "-c", str(cfg)]) == 2
    assert "not found" in capsys.readouterr().err
    photo = str(Path(searcher.path_of([image_id])[0]))
    csv = ["--format", "csv", "--filter", "category=hat", "--top-n", "3"]
    assert main(["query", photo, "-c", str(cfg), *csv]) == 0
    answers = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert answers["category"].tolist() == ["hat"] * 3 and "path" not in answers
    assert main(["query", photo, "-c", str(cfg), "--filter", "colour=red"]) == 2
    unknown = capsys.readouterr().err
    assert "unknown filter column 'colour'" in unknown and "category" in unknown


def test_a_manifest_run_writes_product_neighbours_and_links_products(manifest_run) -> None:
    _, _, rows, result = manifest_run
    run = result.run_dir
    products = pd.read_parquet(run / "bulk" / "product_neighbours.parquet")
    assert set(products["product_id"]) == set(rows["product_id"])
    assert not (products["product_id"] == products["neighbour_product_id"]).any()
    assert not products.duplicated(["product_id", "neighbour_product_id"]).any()
    assert products.groupby("product_id")["rank"].max().max() == 4
    csv = pd.read_csv(run / "bulk" / "neighbours.csv")
    assert list(csv.columns) == list(products.columns) and len(csv) == len(products)
    report = (run / "report.html").read_text(encoding="utf-8")
    assert 'href="https://shop.example/p/' in report and "SKU-0" in report
    catalog = pd.read_parquet(run / "catalog.parquet")
    assert {"product_id", "category", "title", "url"} <= set(catalog.columns)


def test_the_next_run_picks_up_added_changed_and_removed_rows(manifest_run, tmp_path: Path) -> None:
    import shutil

    from vasrch.orchestration.flows.train import train_flow
    from vasrch.search.searcher import open_run

    cfg, _, rows, result = manifest_run
    shutil.copytree(result.run_dir.parents[1], tmp_path / "ws")
    config = yaml.safe_load(cfg.read_text())
    edited = rows.copy()
    removed = edited["image"].iloc[2]  # SKU-001's first photo
    gone = edited["image"].iloc[5]
    edited = edited[~edited["image"].isin([removed, gone])]
    edited.loc[edited["product_id"] == "SKU-000", "title"] = "renamed"
    edited = pd.concat(
        [edited, rows.iloc[[3]].assign(product_id="SKU-NEW", image=rows["image"].iloc[2])]
    )
    write_manifest(tmp_path / "products.csv", edited.to_dict("records"))
    config["catalog"]["manifest"] = str(tmp_path / "products.csv")
    second = train_flow(str(write_config(tmp_path, config)))
    # the photo moved from SKU-001 to SKU-NEW: same bytes, so it is not embedded again
    counts = second.manifest.counts
    assert counts.indexed == len(rows) - 1 and counts.gone == 1
    assert counts.products == rows["product_id"].nunique() + 1
    catalog = pd.read_parquet(second.run_dir / "catalog.parquet").set_index("image_id")
    assert gone not in catalog.index
    assert catalog.loc[removed, "product_id"] == "SKU-NEW"
    assert set(catalog.loc[catalog["product_id"] == "SKU-000", "title"]) == {"renamed"}
    searcher = open_run(tmp_path / "ws")
    table = searcher.to_table(
        searcher.search_ids([rows["image"].iloc[4]], top_n=30), [rows["image"].iloc[4]]
    )
    assert "SKU-NEW" in set(table["product_id"])
    assert set(table.loc[table["product_id"] == "SKU-000", "title"]) <= {"renamed"}


def test_query_flow_filters_and_writes_products_without_paths(manifest_run) -> None:
    from vasrch.orchestration.flows.query import query_flow

    cfg = manifest_run[0]
    photo = next(Path(yaml.safe_load(cfg.read_text())["catalog"]["path"]).glob("hat/*"))
    done = query_flow(str(cfg), [str(photo)], top_n=3, filters={"category": ["bag", "mug"]})
    table = pd.read_parquet(done.out_dir / "results.parquet")
    assert list(table.columns[:5]) == ["query", "rank", "product_id", "score", "image_id"]
    assert "path" not in table and set(table["category"]) <= {"bag", "mug"} and len(table) == 3
    page = (done.out_dir / "results.html").read_text(encoding="utf-8")
    assert 'href="https://shop.example/p/' in page and "SKU-" in page


def test_the_query_results_artifact_shows_titles_and_names_as_typed(manifest_run, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tests.imagefactory import shopper_copy
    from tests.test_query_artifact import render
    from vasrch.orchestration.flows.query import query_flow

    cfg, _, rows, _ = manifest_run
    catalog = Path(yaml.safe_load(cfg.read_text())["catalog"]["path"])
    upload = tmp_path / "uploads" / "3f2a9c1e-7b4d-4e8a-9c2f-5d6e7f8a9b0c.jpg"
    upload.parent.mkdir()
    upload.write_bytes(shopper_copy(catalog / rows["image"].iloc[0]))
    names = {str(upload): "red hat | summer <i>sale</i>.jpg"}
    state = query_flow(str(cfg), [str(upload.parent)], top_n=3, names=names, return_state=True)
    done = state.result()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    markdown = next(a.data for a in artifacts if a.key == "query-results")
    rendered = render(markdown)
    assert "Query red hat | summer <i>sale</i>.jpg · photo" in rendered.paragraphs
    [(header, *cells)] = rendered.tables
    assert header == ["rank", "product", "score"]
    assert len(cells) == 3 and all(len(row) == 3 for row in cells)
    answers = pd.read_parquet(done.out_dir / "results.parquet")
    assert [row[1] for row in cells] == [
        f"{sku} · {title}"
        for sku, title in zip(answers["product_id"], answers["title"], strict=True)
    ]
    assert "(reseller) #" in cells[0][1] and "<b>x</b>" in cells[0][1]
    assert not {"b", "i"} & rendered.tags
    assert upload.stem not in markdown  # the generated name shows nowhere
    page = (done.out_dir / "results.html").read_text(encoding="utf-8")
    assert "red hat | summer &lt;i&gt;sale&lt;/i&gt;.jpg" in page and upload.stem not in page


def test_a_run_keeps_its_rejections_with_their_manifest_rows(manifest_run, capsys) -> None:
    from vasrch.cli.runs import _print_rejections
    from vasrch.cli.train import print_summary
    from vasrch.layout import RunLayout
    from vasrch.workspace.rejections import run_rejections

    _, _, rows, result = manifest_run
    extract, counts = result.extract, result.manifest.counts
    assert (extract.seen, extract.rejected) == (len(rows) + 2, 2)
    assert extract.new + extract.reused + extract.rejected == extract.seen
    assert extract.new + extract.reused == counts.indexed == len(rows)
    run = RunLayout(result.run_dir)
    assert "rejections.parquet" in result.manifest.artifacts
    kept = run_rejections(run, result.manifest)
    assert kept.to_dict("records") == [
        {
            "image_id": rows["image"].iloc[0],
            "row": 50,
            "reason": "products.csv row 50: repeats an earlier row",
            "retry": True,
        },
        {
            "image_id": "hat/gone.jpg",
            "row": 51,
            "reason": "products.csv row 51: listed in the manifest but not found",
            "retry": True,
        },
    ]
    print_summary(result)
    _print_rejections(run, result.manifest)
    out = " ".join(capsys.readouterr().out.split())
    assert f"{len(rows) + 2} seen = " in out and f"+ 2 rejected; {len(rows)} indexed" in out
    assert "rejected: hat/gone.jpg: products.csv row 51: listed in the manifest" in out
    assert "rejected photos (2)" in out and str(run.rejections) in out
    report = run.report.read_text(encoding="utf-8")
    rejected = report.split('id="rejected"')[1]
    assert "<td>hat/gone.jpg</td><td>51</td>" in rejected


def test_manifest_numbers_stay_numbers_in_answers(manifest_run) -> None:
    import json

    from vasrch.search.searcher import open_run

    _, _, rows, result = manifest_run
    searcher = open_run(result.run_dir.parents[1])
    found = searcher.search_ids([rows["image"].iloc[0]], top_n=3)
    answers = json.loads(json.dumps(searcher.answer_rows(found)))
    assert all(isinstance(a["price"], float) for a in answers)
    table = searcher.to_table(found, [rows["image"].iloc[0]])
    assert all(isinstance(p, float) for p in table["price"])
    assert searcher.products.matching({"price": ["10.5"]}).tolist() == ["SKU-000"]


def test_report_captions_sample_clusters_with_products(manifest_run) -> None:
    report = manifest_run[3].run_dir.joinpath("report.html").read_text(encoding="utf-8")
    clusters = report.split('id="clusters"')[1].split('id="queries"')[0]
    assert "SKU-0" in clusters and "number" in clusters


def test_query_flow_refuses_a_bad_filter_before_loading_the_model(manifest_run) -> None:
    cfg = manifest_run[0]
    photo = next(Path(yaml.safe_load(cfg.read_text())["catalog"]["path"]).glob("hat/*"))
    script = (
        "import sys\n"
        "from vasrch.orchestration.flows.query import query_flow\n"
        "try:\n"
        f"    query_flow({str(cfg)!r}, [{str(photo)!r}], filters={{'colour': ['red']}})\n"
        "except Exception as err:\n"
        "    print('refused:', err)\n"
        "print('model loaded:', any(m in sys.modules for m in ('tensorflow', 'sklearn')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "refused: unknown filter column 'colour'" in done.stdout, done.stderr[-2000:]
    assert "model loaded: False" in done.stdout  # neither the backbone nor the run's index
