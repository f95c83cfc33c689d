"""A config whose backbone differs from LATEST's (a new default, or a changed `features`
section): the next run extracts every photo once and says so, and the older run keeps answering
with its own backbone."""

from __future__ import annotations

import pytest

from tests.configs import write_config


@pytest.mark.slow  # three trains, two backbones: minutes on 2 cores
def test_new_backbone_extracts_once_says_so_and_old_runs_keep_answering(
    tmp_path, demo_catalog, capsys
):
    from vasrch.cli.train import print_summary
    from vasrch.orchestration.flows.train import train_flow
    from vasrch.search.searcher import embed_files, open_run

    def config(name: str, features: dict):
        return write_config(
            tmp_path,
            {
                "catalog": {"path": str(demo_catalog)},
                "workspace": "ws",
                "features": features,
                "clustering": {"num_clusters": 4, "diagnostics": {"k_min": 2, "k_max": 4}},
                "evaluation": {"sample": 16, "simulated_queries": 8},
                "bulk": {"enabled": False},
            },
            name=f"{name}.yaml",
        )

    # Before issue 23 the default pooled by averaging; the default is now regional GeM.
    old = train_flow(str(config("old-default", {"pooling": "avg"})))
    assert old.backbone_note is None
    new = train_flow(str(config("new-default", {})))
    assert new.extract.new == old.extract.seen == new.extract.seen and new.extract.reused == 0
    assert new.backbone_note.startswith(f"backbone changed: LATEST ({old.run_id}) was built with")
    assert old.manifest.fingerprint in new.backbone_note
    assert old.manifest.fingerprint.startswith("efficientnet_lite0-avg-224-")
    assert new.manifest.fingerprint.startswith("efficientnet_lite0-rgem-224-")
    print_summary(new)
    assert f"note: backbone changed: LATEST ({old.run_id})" in capsys.readouterr().out
    again = train_flow(str(config("new-default", {})))
    assert again.backbone_note is None and again.extract.new == 0

    searcher = open_run(tmp_path / "ws", old.run_id)
    backbone = searcher.backbone()
    assert backbone.spec.pooling == "avg" and backbone.spec.input_size == 224
    image_id = str(searcher.index.ids[0])
    vectors, ok, _ = embed_files(searcher.path_of([image_id]), backbone)
    answer = searcher.index.search(vectors, 1, searcher.index.k)
    assert ok == [0] and answer.ids[0, 0] == image_id and answer.scores[0, 0] > 0.9
