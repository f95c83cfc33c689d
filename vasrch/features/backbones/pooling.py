"""Pooling of a backbone's feature map into one vector per image."""

from __future__ import annotations

from typing import Any

from vasrch.errors import ConfigError

POOLINGS = ("avg", "max", "gem", "rmac", "rgem", "flatten")
REGION_LEVELS = (2, 3)


def regions(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """R-MAC regions (Tolias et al.) of an h x w feature map as (y0, y1, x0, x1): the whole map,
    then at each level l of REGION_LEVELS l x l squares of side 2 * min(h, w) / (l + 1), spread
    evenly from edge to edge (overlapping)."""
    out = [(0, h, 0, w)]
    for level in REGION_LEVELS:
        side = max(1, round(2 * min(h, w) / (level + 1)))
        ys = [round(i * (h - side) / (level - 1)) for i in range(level)]
        xs = [round(i * (w - side) / (level - 1)) for i in range(level)]
        out += [(y, y + side, x, x + side) for y in ys for x in xs]
    return out


def _gem(feature_map: Any, p: float) -> Any:
    from keras import ops

    clipped = ops.maximum(feature_map, 1e-6)
    return ops.power(ops.mean(ops.power(clipped, p), axis=(1, 2)), 1.0 / p)


def _regional(feature_map: Any, method: str, gem_p: float) -> Any:
    """Sum over `regions` of each region's max (rmac) or GeM (rgem) vector, each normalised."""
    from keras import ops

    h, w = feature_map.shape[1], feature_map.shape[2]
    if h is None or w is None:
        raise ConfigError(f"pooling {method} needs a fixed input size")
    total = None
    for y0, y1, x0, x1 in regions(int(h), int(w)):
        part = feature_map[:, y0:y1, x0:x1]
        v = ops.max(part, axis=(1, 2)) if method == "rmac" else _gem(part, gem_p)
        v = v / ops.maximum(ops.norm(v, axis=-1, keepdims=True), 1e-12)
        total = v if total is None else total + v
    return total


def pool(feature_map: Any, method: str, gem_p: float = 3.0) -> Any:
    """Pool a (N, H, W, C) tensor to (N, D); a (N, D) tensor is returned unchanged. rmac and rgem
    are regional (see `regions`); rgem and gem use the exponent gem_p."""
    from keras import ops

    if len(feature_map.shape) == 2:
        return feature_map
    if method == "avg":
        return ops.mean(feature_map, axis=(1, 2))
    if method == "max":
        return ops.max(feature_map, axis=(1, 2))
    if method == "gem":
        return _gem(feature_map, gem_p)
    if method in ("rmac", "rgem"):
        return _regional(feature_map, method, gem_p)
    if method == "flatten":
        return ops.reshape(feature_map, (ops.shape(feature_map)[0], -1))
    raise ConfigError(f"pooling must be one of {POOLINGS}, got {method!r}")
