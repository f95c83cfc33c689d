"""Pooling of a backbone's feature map into one vector per image."""

from __future__ import annotations

from typing import Any

from vasrch.errors import ConfigError

POOLINGS = ("avg", "max", "gem", "flatten")


def pool(feature_map: Any, method: str, gem_p: float = 3.0) -> Any:
    """Pool a (N, H, W, C) tensor to (N, D); a (N, D) tensor is returned unchanged."""
    from keras import ops

    if len(feature_map.shape) == 2:
        return feature_map
    if method == "avg":
        return ops.mean(feature_map, axis=(1, 2))
    if method == "max":
        return ops.max(feature_map, axis=(1, 2))
    if method == "gem":
        clipped = ops.maximum(feature_map, 1e-6)
        return ops.power(ops.mean(ops.power(clipped, gem_p), axis=(1, 2)), 1.0 / gem_p)
    if method == "flatten":
        return ops.reshape(feature_map, (ops.shape(feature_map)[0], -1))
    raise ConfigError(f"pooling must be one of {POOLINGS}, got {method!r}")
