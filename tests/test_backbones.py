import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vasrch.features.backbones import BackboneSpec, fingerprint, load_backbone


def test_vgg16_block5_pool_flatten_is_the_original_25088_d() -> None:
    backbone = load_backbone(
        BackboneSpec(name="VGG16", weights="none", layer="block5_pool", pooling="flatten"),
        batch_size=2,
    )
    assert backbone.dim == 25_088
    vectors = backbone.embed(np.random.default_rng(0).integers(0, 255, (3, 224, 224, 3), np.uint8))
    assert vectors.shape == (3, 25_088)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["avg", "max", "gem"])
def test_keras_application_by_name_with_pooling(pooling: str) -> None:
    spec = BackboneSpec(name="vgg16", weights="none", pooling=pooling, image_size=64)
    backbone = load_backbone(spec, batch_size=4)
    pixels = np.random.default_rng(1).integers(0, 255, (5, 64, 64, 3), np.uint8)
    out = backbone.embed(pixels)
    assert out.shape == (5, 512) and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])


@pytest.mark.slow  # long: run with -m slow
def test_random_weights_are_deterministic_across_processes() -> None:
    code = (
        "import numpy as np;from vasrch.features.backbones import BackboneSpec, load_backbone;"
        "b=load_backbone(BackboneSpec(name='MobileNetV2',weights='none',image_size=64));"
        "print(b.embed(np.full((1,64,64,3),100,np.uint8))[0][:4].round(5).tolist())"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_fingerprint_covers_what_changes_vectors() -> None:
    base = BackboneSpec()
    variants = [
        BackboneSpec(pooling="gem"),
        BackboneSpec(pooling="rmac"),
        BackboneSpec(pooling="avg"),
        BackboneSpec(gem_p=2.5),
        BackboneSpec(image_size=256),
        BackboneSpec(weights="none"),
        BackboneSpec(mixed_precision=True),
        BackboneSpec(name="VGG16", weights="none"),
    ]
    prints = {fingerprint(s) for s in [base, *variants]}
    assert len(prints) == 1 + len(variants)
    assert fingerprint(BackboneSpec()) == fingerprint(base)
    assert fingerprint(base).startswith("efficientnet_lite0-rgem-224-")


def test_unknown_backbone_and_layer_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet9000'"):
        load_backbone(BackboneSpec(name="resnet9000", weights="none"))
    with pytest.raises(ValueError, match="has no layer 'block9_pool'"):
        load_backbone(BackboneSpec(name="VGG16", weights="none", layer="block9_pool"))


def test_local_weights_file(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(7)
    model = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "mine.weights.h5"
    model.save_weights(path)
    spec = BackboneSpec(name="MobileNetV2", weights=str(path), pooling="avg", image_size=64)
    assert fingerprint(spec) != fingerprint(BackboneSpec(name="MobileNetV2", image_size=64))
    got = load_backbone(spec).embed(np.full((1, 64, 64, 3), 90, np.uint8))
    from keras.applications.mobilenet_v2 import preprocess_input

    want = model(preprocess_input(np.full((1, 64, 64, 3), 90, np.float32))).numpy().mean((1, 2))
    want /= np.linalg.norm(want)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)


def test_imagenet_download_failure_says_where_to_put_the_file(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KERAS_HOME": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    code = (
        "from vasrch.features.backbones import BackboneSpec, load_backbone\n"
        "load_backbone(BackboneSpec(name='MobileNetV2', weights='imagenet'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "could not get the ImageNet weights of MobileNetV2" in proc.stderr
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in proc.stderr
    assert "put it at" in proc.stderr


def test_model_threads_are_set_before_tensorflow_runs_and_refused_after() -> None:
    import subprocess
    import sys

    code = """
import tensorflow as tf
from vasrch.features.backbones import limit_model_threads
assert limit_model_threads(1)
assert float(tf.reduce_sum(tf.ones((4, 4)))) == 16.0  # TensorFlow starts its thread pools
assert tf.config.threading.get_intra_op_parallelism_threads() == 1
assert limit_model_threads(1)  # unchanged: nothing to do
assert not limit_model_threads(2)  # too late: the pools exist
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_rmac_regions_of_a_7x7_map() -> None:
    from vasrch.features.backbones.pooling import regions

    level2 = [(y, y + 5, x, x + 5) for y in (0, 2) for x in (0, 2)]
    level3 = [(y, y + 4, x, x + 4) for y in (0, 2, 3) for x in (0, 2, 3)]
    assert regions(7, 7) == [(0, 7, 0, 7), *level2, *level3]


@pytest.mark.parametrize("pooling", ["rmac", "rgem"])
def test_regional_pooling_sums_normalised_region_vectors(pooling: str) -> None:
    from vasrch.features.backbones.efficientnet_lite import build_efficientnet_lite
    from vasrch.features.backbones.pooling import regions

    pixels = np.random.default_rng(2).integers(0, 255, (2, 224, 224, 3), np.uint8)
    fmap = np.asarray(build_efficientnet_lite(weights="imagenet")(pixels.astype(np.float32)))
    expected = np.zeros((2, fmap.shape[-1]))
    for y0, y1, x0, x1 in regions(*fmap.shape[1:3]):
        part = fmap[:, y0:y1, x0:x1].astype(np.float64)
        if pooling == "rmac":
            v = part.max(axis=(1, 2))
        else:
            v = (np.maximum(part, 1e-6) ** 2.5).mean(axis=(1, 2)) ** (1 / 2.5)
        expected += v / np.linalg.norm(v, axis=1, keepdims=True)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    spec = BackboneSpec(pooling=pooling, gem_p=2.5)
    got = load_backbone(spec, batch_size=2).embed(pixels)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    avg = load_backbone(BackboneSpec(pooling="avg"), batch_size=2).embed(pixels)
    assert not np.allclose(got, avg, atol=1e-3)
