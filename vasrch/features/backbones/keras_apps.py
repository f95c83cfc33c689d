"""Any `keras.applications` model by name, cut at a layer, with its own preprocessing."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vasrch.errors import ConfigError

KERAS_CACHE = Path("~/.keras/models").expanduser()


def application_names() -> dict[str, str]:
    """Lower-case name -> exact name of every model constructor in keras.applications."""
    import keras

    return {
        n.lower(): n
        for n in dir(keras.applications)
        if n[0].isupper() and callable(getattr(keras.applications, n))
    }


def _constructor(name: str) -> Callable[..., Any]:
    import keras

    names = application_names()
    exact = names.get(name.lower())
    if exact is None:
        raise ConfigError(
            f"unknown backbone {name!r}: use efficientnet_lite0, efficientnet_lite1, "
            "efficientnet_lite2 or a keras.applications model "
            f"such as VGG16, ResNet50, MobileNetV2, EfficientNetB0 (all: {sorted(names.values())})"
        )
    return getattr(keras.applications, exact)


def _download_error(name: str, err: Exception) -> RuntimeError:
    url = re.search(r"https?://\S+?\.h5", str(err))
    where = f"{url.group(0)} " if url else "the weights file "
    fname = url.group(0).rsplit("/", 1)[1] if url else "<weights file>.h5"
    return RuntimeError(
        f"could not get the ImageNet weights of {name} (no network?). Download {where}on a "
        f"machine with network and put it at {KERAS_CACHE / fname}, or set features.weights to "
        f"a local weights file, or use backbone efficientnet_lite0, 1 or 2 (offline). Cause: {err}"
    )


def build_keras_application(
    name: str, weights: str | None, layer: str | None, image_size: int
) -> tuple[Any, Callable[[Any], Any]]:
    """(model from RGB 0..255 pixels to the feature map or layer output, preprocess function)."""
    import keras

    ctor = _constructor(name)
    preprocess = importlib.import_module(inspect.getmodule(ctor).__name__).preprocess_input
    include_top = layer is not None and layer.startswith(("fc", "predictions", "flatten"))
    shape = (224, 224, 3) if include_top else (image_size, image_size, 3)
    try:
        base = ctor(include_top=include_top, weights=weights, input_shape=shape)
    except Exception as err:
        if weights == "imagenet" and ("URL fetch failure" in str(err) or "http" in str(err)):
            raise _download_error(name, err) from None
        raise
    if layer is None:
        return base, preprocess
    try:
        out = base.get_layer(layer).output
    except ValueError:
        raise ConfigError(
            f"{name} has no layer {layer!r}; some of its layers: "
            f"{[lyr.name for lyr in base.layers[-8:]]}"
        ) from None
    return keras.Model(base.inputs, out, name=f"{base.name}_{layer}"), preprocess
