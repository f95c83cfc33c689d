"""Registry of feature extractors: a spec, its fingerprint, and the built, warm backbone."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vasrch.errors import ConfigError
from vasrch.features.backbones.efficientnet_lite import LiteVariant, lite_variant
from vasrch.features.duplicate_prints import PRINT_VERSION
from vasrch.hashing import sha256_file
from vasrch.quiet import native_stderr_quiet

PREPROCESSING_VERSION = "v1-pil-bilinear-square"
DEFAULT_BACKBONE = "efficientnet_lite0"
_LOCK = threading.Lock()
_BUILT: dict[str, Backbone] = {}


@dataclass(frozen=True)
class BackboneSpec:
    """Everything that changes a feature vector."""

    name: str = DEFAULT_BACKBONE
    weights: str = "imagenet"
    layer: str | None = None
    pooling: str = "rgem"
    gem_p: float = 3.0
    image_size: int | None = None
    mixed_precision: bool = False

    @classmethod
    def from_config(cls, features: Any) -> BackboneSpec:
        """The spec that a config's `features` section asks for."""
        return cls(
            name=features.backbone,
            weights=features.weights,
            layer=features.layer,
            pooling=features.pooling,
            gem_p=features.gem_p,
            image_size=features.image_size,
            mixed_precision=features.mixed_precision,
        )

    @property
    def lite(self) -> LiteVariant | None:
        """The EfficientNet-Lite variant `name` means (case ignored, - taken as _), or None."""
        return lite_variant(self.name)

    @property
    def input_size(self) -> int:
        """Square input size in pixels: `image_size`, else the EfficientNet-Lite variant's own
        (224, 240, 260), else 224."""
        if self.image_size:
            return self.image_size
        return self.lite.input_size if self.lite else 224


def weights_identity(spec: BackboneSpec) -> str:
    """Short id of the weights for the fingerprint: random-seed0 (weights none), the Lite weights'
    id, keras-imagenet, or file-sha256:<16 hex> of a weights file (FileNotFoundError when that file
    is missing)."""
    if spec.weights == "none":
        return "random-seed0"
    if spec.lite:
        from vasrch.features.backbones.efficientnet_lite import lite_weights_identity

        return lite_weights_identity(spec.weights, spec.lite.name)
    if spec.weights == "imagenet":
        return "keras-imagenet"
    path = Path(spec.weights)
    if not path.is_file():
        raise FileNotFoundError(f"features.weights: file not found: {path}")
    return "file-sha256:" + sha256_file(path)[:16]


def fingerprint(spec: BackboneSpec) -> str:
    """Folder-safe id of the shards a spec makes: name-pooling-size-<hash of everything>; the
    print version (duplicate_prints) is part of it, so a cache without the current prints is
    extracted again."""
    parts = asdict(spec) | {
        "name": spec.name.lower().replace("-", "_"),
        "weights": weights_identity(spec),
        "image_size": spec.input_size,
        "gem_p": spec.gem_p if spec.pooling in ("gem", "rgem") else None,
        "preprocessing": PREPROCESSING_VERSION,
        "prints": PRINT_VERSION,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    return f"{parts['name']}-{spec.pooling}-{spec.input_size}-{digest}"


@dataclass
class Backbone:
    """A built network that turns uint8 RGB batches into L2-normalised float32 vectors."""

    spec: BackboneSpec
    fingerprint: str
    dim: int
    batch_size: int
    device: str
    _fn: Any = field(repr=False)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(n, s, s, 3) uint8 -> (n, dim) float32 unit vectors; pads to the batch size."""
        import tensorflow as tf

        n = len(pixels)
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            chunk = pixels[start : start + self.batch_size]
            m = len(chunk)
            if m < self.batch_size:
                pad = np.zeros((self.batch_size - m, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            with tf.device(self.device):
                vec = self._fn(tf.constant(chunk, dtype=tf.float32)).numpy()[:m]
            out[start : start + m] = vec
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def _device(requested: str) -> str:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if requested == "gpu" and not gpus:
        raise ConfigError("features.device is gpu but TensorFlow sees no GPU; use auto or cpu")
    if requested == "cpu" or not gpus:
        return "/CPU:0"
    return gpus[0].name


def _build(spec: BackboneSpec, batch_size: int, device: str) -> Backbone:
    import keras
    import tensorflow as tf

    from vasrch.features.backbones.pooling import pool

    weights = None if spec.weights == "none" else spec.weights
    if weights is None:
        keras.utils.set_random_seed(0)
    if spec.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with tf.device(device):
            if spec.lite:
                from vasrch.features.backbones.efficientnet_lite import build_efficientnet_lite

                if spec.layer is not None:
                    raise ValueError(f"features.layer is not supported for {spec.lite.name}")
                model = build_efficientnet_lite(
                    spec.lite.name, include_top=False, weights=weights, folded=True
                )

                def preprocess(x: Any) -> Any:
                    return x
            else:
                from vasrch.features.backbones.keras_apps import build_keras_application

                model, preprocess = build_keras_application(
                    spec.name, weights, spec.layer, spec.input_size
                )
    finally:
        keras.mixed_precision.set_global_policy("float32")

    @tf.function(reduce_retracing=True)
    def fn(x: Any) -> Any:
        feats = model(preprocess(x), training=False)
        return tf.cast(pool(feats, spec.pooling, spec.gem_p), tf.float32)

    probe = np.zeros((1, spec.input_size, spec.input_size, 3), dtype=np.float32)
    with tf.device(device):
        dim = int(fn(tf.constant(probe)).shape[-1])
    return Backbone(spec, fingerprint(spec), dim, batch_size, device, fn)


def limit_model_threads(threads: int) -> bool:
    """Run each model call on at most `threads` threads (TensorFlow's intra-op pool; 0 leaves
    TensorFlow's default, every core). False when TensorFlow already ran in this process with
    another setting, which then cannot change."""
    with native_stderr_quiet():  # the first import prints TensorFlow's start-up lines
        import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        return False
    return True


def load_backbone(spec: BackboneSpec, batch_size: int = 32, device: str = "auto") -> Backbone:
    """The built backbone for `spec`, built once per process and kept warm."""
    key = f"{fingerprint(spec)}:{batch_size}:{device}"
    with _LOCK:
        if key not in _BUILT:
            with native_stderr_quiet():
                _BUILT[key] = _build(spec, batch_size, _device(device))
        return _BUILT[key]
