from pathlib import Path

import pytest

from vasrch.config import ConfigError, load_config


def test_defaults_and_relative_paths(write_config, tmp_path: Path) -> None:
    cfg = load_config(write_config({"catalog": {"path": "imgs"}, "workspace": "ws"}))
    assert cfg.catalog.path == (tmp_path / "imgs").resolve()
    assert cfg.workspace == (tmp_path / "ws").resolve()
    assert cfg.features.backbone == "efficientnet_lite0"
    assert cfg.clustering.num_clusters == "auto"


def test_unknown_key_names_file_field_and_value(write_config) -> None:
    path = write_config({"catalog": {"path": "x"}, "workspace": "w", "features": {"poolin": "avg"}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "features.poolin" in msg and "'avg'" in msg and "unknown key" in msg


def test_bad_value_names_field_and_value(write_config) -> None:
    path = write_config(
        {"catalog": {"path": "x"}, "workspace": "w", "features": {"pooling": "mean"}}
    )
    with pytest.raises(ConfigError, match=r"features\.pooling = 'mean'"):
        load_config(path)


def test_missing_required_section(write_config) -> None:
    with pytest.raises(ConfigError, match="workspace: required"):
        load_config(write_config({"catalog": {"path": "x"}}))


def test_negative_batch_size_rejected(write_config) -> None:
    path = write_config({"catalog": {"path": "x"}, "workspace": "w", "features": {"batch_size": 0}})
    with pytest.raises(ConfigError, match=r"features\.batch_size = 0"):
        load_config(path)


def test_overrides_apply_and_validate(write_config) -> None:
    path = write_config({"catalog": {"path": "x"}, "workspace": "w"})
    assert load_config(path, {"search.probes": 5}).search.probes == 5
    with pytest.raises(ConfigError, match=r"search\.probes = 0"):
        load_config(path, {"search.probes": 0})


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("catalog: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_demo_config_is_valid() -> None:
    cfg = load_config(Path(__file__).parents[1] / "config" / "demo.yaml")
    assert cfg.catalog.demo


def test_a_store_url_is_kept_as_a_url_and_not_checked_as_a_folder(write_config) -> None:
    from vasrch.config import check_inputs

    cfg = load_config(
        write_config(
            {
                "catalog": {"path": "s3://shop-photos/catalog", "cache_dir": "photos"},
                "workspace": "ws",
            }
        )
    )
    assert cfg.catalog.path == "s3://shop-photos/catalog"
    assert isinstance(cfg.catalog.cache_dir, Path) and cfg.catalog.cache_dir.is_absolute()
    check_inputs(cfg)  # a URL is not a missing folder
    demo = load_config(
        write_config({"catalog": {"path": "s3://shop-photos/c", "demo": True}, "workspace": "ws"})
    )
    with pytest.raises(ConfigError, match=r"catalog\.demo"):
        check_inputs(demo)
