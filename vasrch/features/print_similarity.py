"""Duplicate scores of pairs of prints (duplicate_prints): 1 for the same picture, about 0.6 for
unrelated photos.

For each pair, every window of one print is correlated with the whole of the other, both ways,
and the best-matching pair of windows is scored: 1 - sqrt(d / 2), d the sum over pixels of the
squared difference of the two zero-mean unit-length windows, each pixel's share capped at
`PIXEL_CAP` and both windows normalised again over the pixels where they agree, so a text or logo
overlay costs little; each half of the windows (top, bottom, left, right) is scored the same way
and the best of the five counts. A pair whose best windows correlate under `CHECK_FROM` keeps the
plain capped score (no edited copy falls that low). When another window won but the two wholes
still correlate at least `WHOLE_FROM` (an overlay can pull the choice away), the wholes are scored
too. A crop or frame rarely matches a fixed window to the pixel, so a pair scoring at least
`REFINE_FROM` (and not through the white-square window) is aligned too: the box of the cropped
side is moved, by Gauss-Newton steps on the blurred thumbnail, until its 12 x 12 sampling best
matches the other photo's whole, and the aligned windows score again; the pair keeps the highest
score. Last, grey pictures cannot tell an orange shirt from a purple one of the same cut: for a
pair still scoring at least `REFINE_FROM` (scores below are no duplicates), where the grey pixels
agree, the windows' colour cells may differ by `COLOUR_TOLERANCE` in red or green share (a tenth
of them more; a contrast edit moves them up to 0.07), and each unit beyond costs `COLOUR_WEIGHT`
of the score.
"""

from __future__ import annotations

import numpy as np

from vasrch.features.duplicate_prints import (
    BOXES,
    COLOUR_SIDE,
    MIRROR,
    PIXELS,
    SIDE,
    SQUARE,
    THUMB,
    WINDOWS,
    Prints,
)

PIXEL_CAP = 1e-3 * 256 / PIXELS
REFINE_FROM = 0.78
REFINE_STEPS = 3
WHOLE_FROM = 0.6
CHECK_FROM = 0.5
COLOUR_TOLERANCE = 0.08
COLOUR_WEIGHT = 2.0
_MAX_STEP = 0.03
# How far an aligned box may move: up to 14% of a side cut off, or 2% beyond the photo.
_BOX_LOW, _BOX_HIGH = np.float32(-0.02), np.float32(0.14)
_CENTRES = ((np.arange(SIDE) + 0.5) / SIDE).astype(np.float32)
_WHOLE = BOXES[0]
_MIRROR_ORDER = np.arange(PIXELS).reshape(SIDE, SIDE)[:, ::-1].ravel()
# Cell-centre fraction of each of the PIXELS samples across (_U) and down (_W) its box.
_U = np.tile(_CENTRES, SIDE)[None, :]
_W = np.repeat(_CENTRES, SIDE)[None, :]
_1U, _1W = 1 - _U, 1 - _W


def print_scores(prints: Prints, a: np.ndarray, b: np.ndarray, block: int = 2048) -> np.ndarray:
    """Duplicate score of each pair of rows (a[i], b[i]), float32 in (-inf, 1], `block` pairs at
    a time (2,048 keep the temporaries in the CPU's cache: about 1.5x faster than 8,192)."""
    out = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), block):
        ra, rb = a[start : start + block], b[start : start + block]
        out[start : start + len(ra)] = _block_scores(prints, ra, rb)
    return out


def _block_scores(prints: Prints, ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    wa, sa, wb, sb = prints.windows[ra], prints.scales[ra], prints.windows[rb], prints.scales[rb]
    window, a_side, correlation, wholes = _best_windows(wa, sa, wb, sb)
    va = _float_window(wa, sa, np.where(a_side, window, 0))
    vb = _float_window(wb, sb, np.where(a_side, 0, window))
    score = _score(va, vb)
    # Pairs whose best windows barely correlate keep that plain score: no copy gets that far.
    check = np.flatnonzero(correlation >= CHECK_FROM)
    score[check] = _robust_score(va[check], vb[check])
    again = check[(window[check] != 0) & (wholes[check] >= WHOLE_FROM)]
    if len(again):
        zero = np.zeros(len(again), dtype=np.intp)
        whole_a = _float_window(wa[again], sa[again], zero)
        whole_b = _float_window(wb[again], sb[again], zero)
        score[again] = np.maximum(score[again], _robust_score(whole_a, whole_b))
    refine = np.flatnonzero((score >= REFINE_FROM) & (window != SQUARE))
    if len(refine):
        side = a_side[refine, None, None]
        thumbs_a, thumbs_b = prints.thumbs[ra[refine]], prints.thumbs[rb[refine]]
        cropped = np.where(side, thumbs_a, thumbs_b).astype(np.float32)
        whole = np.where(side, thumbs_b, thumbs_a).astype(np.float32)
        target = _normalised(_sample(whole, _boxes(_WHOLE, len(refine)))[0])
        mirrored = window[refine] == MIRROR
        target[mirrored] = target[mirrored][:, _MIRROR_ORDER]
        aligned = _align(cropped, BOXES[window[refine]], target)
        score[refine] = np.maximum(score[refine], _score(*_without_outliers(aligned, target)))
    near = np.flatnonzero(score >= REFINE_FROM)
    ca = prints.colours[ra[near], np.where(a_side, window, 0)[near]].astype(np.float32)
    cb = prints.colours[rb[near], np.where(a_side, 0, window)[near]].astype(np.float32)
    score[near] -= _colour_penalty(ca, cb, va[near], vb[near])
    return score


def _colour_penalty(ca: np.ndarray, cb: np.ndarray, va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """COLOUR_WEIGHT times how far the colour of two windows differs beyond COLOUR_TOLERANCE:
    the larger chromaticity difference of their colour cells, over the cells whose grey pixels
    agree (an overlay changes those, a garment's colour does not); a tenth of them may differ."""
    cells = np.abs(ca - cb).reshape(len(ca), COLOUR_SIDE, COLOUR_SIDE, 2).max(axis=3) / 255
    diff = va - vb
    step = SIDE // COLOUR_SIDE
    agree = (diff * diff < 2 * PIXEL_CAP).reshape(len(va), COLOUR_SIDE, step, COLOUR_SIDE, step)
    agree = agree.all(axis=(2, 4))
    cells = np.where(agree, cells, 0).reshape(len(ca), COLOUR_SIDE * COLOUR_SIDE)
    rank = int(0.9 * cells.shape[1])
    difference = np.partition(cells, rank, axis=1)[:, rank]
    return COLOUR_WEIGHT * np.maximum(difference - COLOUR_TOLERANCE, 0)


def _best_windows(
    wa: np.ndarray, sa: np.ndarray, wb: np.ndarray, sb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: the window that correlates best with the other photo's whole, whether it is a
    window of the first photo, that correlation, and the correlation of the two wholes."""
    a_vs_whole = np.einsum("mwp,mp->mw", wa, wb[:, 0], dtype=np.int32) * (sa * sb[:, :1])
    whole_vs_b = np.einsum("mp,mwp->mw", wa[:, 0], wb[:, 1:], dtype=np.int32)
    correlations = np.concatenate([a_vs_whole, whole_vs_b * (sa[:, :1] * sb[:, 1:])], axis=1)
    best = correlations.argmax(axis=1)
    a_side = best < WINDOWS
    window = np.where(a_side, best, best - WINDOWS + 1)
    return window, a_side, correlations[np.arange(len(best)), best], a_vs_whole[:, 0]


def _float_window(windows: np.ndarray, scales: np.ndarray, window: np.ndarray) -> np.ndarray:
    m = np.arange(len(window))
    return windows[m, window].astype(np.float32) * scales[m, window][:, None]


def _robust_score(va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """The best of the whole windows' score and their halves' scores."""
    whole = _score(*_without_outliers(va, vb))
    halves = _score(*_without_outliers(_halves(va), _halves(vb)))
    return np.maximum(whole, halves.reshape(-1, 4).max(axis=1))


def _halves(v: np.ndarray) -> np.ndarray:
    """(m, PIXELS) windows as (4m, PIXELS / 2): top, bottom, left and right half of each."""
    grid = v.reshape(len(v), 2, SIDE // 2, 2, SIDE // 2)
    top_bottom = grid.reshape(len(v), 2, PIXELS // 2)
    left_right = grid.transpose(0, 3, 1, 2, 4).reshape(len(v), 2, PIXELS // 2)
    return np.concatenate([top_bottom, left_right], axis=1).reshape(-1, PIXELS // 2)


def _without_outliers(va: np.ndarray, vb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both windows made zero-mean and unit-length again over the pixels where they agree
    (squared difference under twice the cap), so an overlay does not rescale the rest."""
    cap = PIXEL_CAP * PIXELS / va.shape[1]
    diff = va - vb
    inlier = (diff * diff < 2 * cap).astype(np.float32)
    count = np.maximum(inlier.sum(axis=1), 1)

    def renormalised(v: np.ndarray) -> np.ndarray:
        mean = np.einsum("ij,ij->i", v, inlier) / count
        square = np.einsum("ij,ij->i", v * v, inlier) - count * mean * mean
        scale = 1 / np.sqrt(np.maximum(square, 1e-12))
        out = v * scale[:, None]
        out -= (mean * scale)[:, None]
        return out

    return renormalised(va), renormalised(vb)


def _score(va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """1 - sqrt(d / 2), d the squared differences summed with each pixel's share capped."""
    diff = va - vb
    diff *= diff
    np.minimum(diff, PIXEL_CAP * PIXELS / va.shape[1], out=diff)
    return 1 - np.sqrt(diff.sum(axis=1) / 2)


def _normalised(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=1, keepdims=True)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)


def _boxes(box: np.ndarray, m: int) -> np.ndarray:
    return np.repeat(box[None, :], m, axis=0)


def _align(thumbs: np.ndarray, boxes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Move each box (left, top, right, bottom) over its thumbnail by Gauss-Newton steps until
    the normalised SIDE x SIDE sampling matches `target`; return that sampling, normalised."""
    boxes = boxes.copy()
    flat = thumbs.reshape(len(thumbs), -1)
    damping = np.float32(1e-3) * np.eye(4, dtype=np.float32)
    for _ in range(REFINE_STEPS):
        values, jacobian = _sample(flat, boxes, with_jacobian=True)
        mean = values.mean(axis=1, keepdims=True)
        norm = np.maximum(np.linalg.norm(values - mean, axis=1), 1e-6)[:, None]
        residual = target - (values - mean) / norm
        # The sampling is normalised: its Jacobian loses its mean and scales by 1 / norm.
        slope = jacobian.mean(axis=2)
        hessian = (
            jacobian @ jacobian.transpose(0, 2, 1) - PIXELS * slope[:, :, None] * slope[:, None, :]
        )
        hessian = hessian / (norm * norm)[:, :, None] + damping
        gradient = (jacobian @ residual[:, :, None]) / norm[:, :, None]
        step = np.linalg.solve(hessian, gradient)[:, :, 0]
        boxes += np.clip(step, -_MAX_STEP, _MAX_STEP)
        boxes[:, :2] = np.clip(boxes[:, :2], _BOX_LOW, _BOX_HIGH)
        boxes[:, 2:] = np.clip(boxes[:, 2:], 1 - _BOX_HIGH, 1 - _BOX_LOW)
    return _normalised(_sample(flat, boxes)[0])


def _sample(
    thumbs: np.ndarray, boxes: np.ndarray, with_jacobian: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Bilinear samples of each (flattened) thumbnail at the SIDE x SIDE cell centres of its
    box, (m, PIXELS); with the Jacobian (m, 4, PIXELS) of the samples in the box's sides."""
    m = len(thumbs)
    pixels = thumbs.reshape(-1)
    y0, fy = _grid(boxes[:, 1], boxes[:, 3])
    x0, fx = _grid(boxes[:, 0], boxes[:, 2])
    start = (y0 * THUMB + (np.arange(m) * THUMB * THUMB)[:, None])[:, :, None] + x0[:, None, :]
    start = start.reshape(m, PIXELS)
    fy = np.repeat(fy, SIDE, axis=1)
    fx = np.tile(fx, (1, SIDE))
    v00, v01 = pixels.take(start), pixels.take(start + 1)
    v10, v11 = pixels.take(start + THUMB), pixels.take(start + THUMB + 1)
    across_top, across_bottom = v01 - v00, v11 - v10
    top = v00 + across_top * fx
    down = v10 + across_bottom * fx - top
    values = top + down * fy
    if not with_jacobian:
        return values, None
    d_x = (across_top + (across_bottom - across_top) * fy) * THUMB
    d_y = down * THUMB
    jacobian = np.stack([d_x * _1U, d_y * _1W, d_x * _U, d_y * _W], axis=1)
    return values, jacobian


def _grid(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnail index and fraction of the SIDE cell centres between `low` and `high`."""
    position = (low[:, None] + _CENTRES[None, :] * (high - low)[:, None]) * THUMB - 0.5
    position = np.clip(position, 0, THUMB - 1.001)
    index = np.floor(position).astype(np.intp)
    return index, (position - index).astype(np.float32)
