"""Drawing a ``FrameResult`` onto its frame: skeletons, boxes and ids, the models' run records and a HUD.

``draw_result`` is the entry point and never touches its input. The ``draw_*`` helpers draw onto the image
they are given and return it (the cv2 convention), so that a frame with many people is copied only once.
Translucent overlays are drawn per person into a small region of interest: a colour layer and an alpha
mask are filled with cv2 (polygons in 1/16-pixel fixed point), then blended onto the image in one pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .. import skeleton
from ..geometry import invert_matrix, transform_points
from ..results import FrameResult, Person

_SHIFT = 4
_ONE = 1 << _SHIFT
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LIMBS: list[list[int]] = skeleton.LIMB_INDEX.tolist()

_PATCH_MAX_DARK = 0.75
"""Darkening of a patch pruned at the first layer; later-pruned patches are darkened proportionally less."""
_LEVEL_BGR = {1: (200, 120, 40), 2: (40, 200, 230), 3: (60, 60, 240)}
"""Granularity level -> fill colour: kept whole (blue), split 2x2 (yellow), split 3x3 (red)."""
_LEVEL_ALPHA = 0.35
_MERGE_ALPHA = 0.45
_MERGE_COLORS = 12
"""Distinct group tints (cycled): bounds the fill calls per person; neighbouring groups rarely share one."""
_OUTLINE_BGR = (210, 210, 210)
"""Patch and cell outlines, drawn without anti-aliasing: they are axis-aligned for an unrotated crop."""
_HEAT_BGR = (40, 40, 230)
_HEAT_MAX_ALPHA = 0.6
_HEAT_LEVELS = 8
"""Joint-attention tint: alpha in this many steps up to the maximum (one fill call per step)."""
_STAGE_BGR = ((150, 150, 150), (230, 200, 60), (60, 220, 240), (255, 255, 255))
"""UniTransPose window outlines, stride 4 to 32: grey, blue, yellow, white."""


@dataclass
class Overlays:
    skeleton: bool = True
    boxes: bool = True
    ids: bool = True
    confidence: bool = True
    """Blend each limb and joint with its confidence as alpha (off: drawn opaque)."""
    patches: bool = False
    granularity: bool = False
    merges: bool = False
    windows: bool = False
    """UniTransPose: its attention windows and where its joint tokens looked."""
    hud: bool = True
    min_score: float = 0.3
    """Joints below this confidence, and limbs touching one, are not drawn."""


def palette(indices: np.ndarray) -> np.ndarray:
    """Distinct, stable BGR colours (N, 3) uint8 for integers (track ids, groups): golden-ratio hue steps."""
    hue = (np.asarray(indices, dtype=np.float64).reshape(-1) * 0.618033988749895 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hue, np.full_like(hue, 200), np.full_like(hue, 255)], axis=-1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]


def id_color(index: int) -> tuple[int, int, int]:
    """``palette`` colour of one integer, as a cv2 colour tuple."""
    b, g, r = palette(np.array([index]))[0]
    return int(b), int(g), int(r)


def line_thickness(box: np.ndarray) -> int:
    """Limb thickness in pixels for a person's (x0, y0, x1, y1) box: about 1 px per 100 px of diagonal."""
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    return max(1, round(np.hypot(w, h) / 100))


def _roi(points: np.ndarray, shape: tuple[int, ...], margin: float) -> tuple[int, int, int, int] | None:
    """Integer (x0, y0, x1, y1) of the points' bounds grown by ``margin`` and clipped to the image."""
    points = points.reshape(-1, 2)
    points = points[np.isfinite(points).all(axis=1)]
    if not len(points):
        return None
    x0, y0 = np.floor(points.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) + margin).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _fixed(points: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Image points as cv2 fixed-point int32 (``shift=_SHIFT``) relative to ``origin``."""
    return np.round((points - np.asarray(origin, dtype=np.float64)) * _ONE).astype(np.int32)


def _composite(img: np.ndarray, roi: tuple[int, int, int, int], layer: np.ndarray, alpha: np.ndarray) -> None:
    """Blend ``layer`` over the ``roi`` of ``img`` with the per-pixel ``alpha`` (uint8, 255 = opaque)."""
    x0, y0, x1, y1 = roi
    alpha = cv2.merge([alpha, alpha, alpha])
    front = cv2.multiply(layer, alpha, scale=1 / 255)
    back = cv2.multiply(img[y0:y1, x0:x1], 255 - alpha, scale=1 / 255)
    img[y0:y1, x0:x1] = cv2.add(front, back)


def _fill_quads(img: np.ndarray, quads: np.ndarray, colors: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Fill image-pixel quadrilaterals (N, 4, 2) with per-quad BGR ``colors`` (N, 3) and ``alphas`` (N,) in
    [0, 1], blended in one pass (one fillPoly per distinct colour and alpha)."""
    roi = _roi(quads, img.shape, 1)
    if roi is None or not len(quads):
        return img
    pts = _fixed(quads, roi[:2])
    layer = np.zeros((roi[3] - roi[1], roi[2] - roi[0], 3), dtype=np.uint8)
    mask = np.zeros(layer.shape[:2], dtype=np.uint8)
    style = np.concatenate([colors, np.round(np.asarray(alphas) * 255)[:, None]], axis=1).astype(np.int64)
    keys = style @ np.array([1 << 24, 1 << 16, 1 << 8, 1])
    _, first, which = np.unique(keys, return_index=True, return_inverse=True)
    for k, (b, g, r, a) in enumerate(style[first]):
        chosen = pts[which.reshape(-1) == k]
        cv2.fillPoly(layer, chosen, (int(b), int(g), int(r)), cv2.LINE_8, _SHIFT)
        cv2.fillPoly(mask, chosen, int(a), cv2.LINE_8, _SHIFT)
    _composite(img, roi, layer, mask)
    return img


def _crop_to_image(person: Person, points: np.ndarray) -> np.ndarray:
    return transform_points(points, invert_matrix(person.crop_matrix))


def _box_quads(boxes: np.ndarray) -> np.ndarray:
    """Crop boxes (N, 4) x0, y0, x1, y1 on the pixel grid (0 = left edge of pixel 0) -> corner points
    (N, 4, 2) in the pixel-centre coordinates of ``geometry``."""
    x0, y0, x1, y1 = (np.asarray(boxes, dtype=np.float64) - 0.5).T
    return np.stack([np.stack(c, axis=-1) for c in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))], axis=1)


def _grid_boxes(rows: int, cols: int, cell_w: float, cell_h: float) -> np.ndarray:
    """Crop boxes (rows * cols, 4) of a grid, row-major."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([c * cell_w, r * cell_h, (c + 1) * cell_w, (r + 1) * cell_h], axis=1).astype(np.float64)


def draw_skeleton(
    img: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    thickness: int = 2,
    min_score: float = 0.3,
    confidence_alpha: bool = True,
) -> np.ndarray:
    """Draw limbs (``skeleton.LIMB_COLORS_BGR``) and joints of one person, anti-aliased.

    A limb is drawn when both its joints reach ``min_score``; with ``confidence_alpha`` each limb is blended
    with the lower of its two scores as alpha and each joint with its own score.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    shown = (scores >= min_score) & np.isfinite(keypoints).all(axis=1)
    radius = thickness + 1
    roi = _roi(keypoints[shown], img.shape, radius + 2)
    if roi is None:
        return img
    alpha = np.where(shown, np.clip(scores, 0, 1) if confidence_alpha else 1.0, 0.0)
    # Plain Python lists from here: the loops below index them per limb and joint.
    alpha = np.round(alpha * 255).astype(int).tolist()
    pts = [tuple(p) for p in _fixed(np.where(shown[:, None], keypoints, 0), roi[:2]).tolist()]
    shown = shown.tolist()
    layer = np.zeros((roi[3] - roi[1], roi[2] - roi[0], 3), dtype=np.uint8)
    mask = np.zeros(layer.shape[:2], dtype=np.uint8)
    # The colour layer is solid and a little wider than the anti-aliased alpha mask, so that the mask alone
    # shapes the edges (an anti-aliased colour line would fade to the layer's black there).
    for (a, b), color in zip(_LIMBS, skeleton.LIMB_COLORS_BGR, strict=True):
        if shown[a] and shown[b]:
            cv2.line(layer, pts[a], pts[b], color, thickness + 2, cv2.LINE_8, _SHIFT)
            cv2.line(mask, pts[a], pts[b], min(alpha[a], alpha[b]), thickness, cv2.LINE_AA, _SHIFT)
    for j, color in enumerate(skeleton.JOINT_COLORS_BGR):
        if shown[j]:
            cv2.circle(layer, pts[j], (radius + 1) * _ONE, color, -1, cv2.LINE_8, _SHIFT)
            cv2.circle(mask, pts[j], radius * _ONE, alpha[j], -1, cv2.LINE_AA, _SHIFT)
    _composite(img, roi, layer, mask)
    return img


def _label(
    img: np.ndarray, text: str, corner: tuple[int, int], color: tuple[int, int, int], below: bool = False
) -> None:
    """Text on a filled ``color`` tag standing on ``corner`` (its bottom-left), or hanging from it (its
    top-left) when ``below``; moved inside the image."""
    scale = _text_scale(img)
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
    x = int(np.clip(corner[0], 0, max(img.shape[1] - w - 4, 0)))
    y = int(np.clip(corner[1] + (h + base + 4) * below, h + base + 4, img.shape[0]))
    cv2.rectangle(img, (x, y - h - base - 4), (x + w + 4, y), color, -1)
    ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(img, text, (x + 2, y - base - 2), _FONT, scale, ink, 1, cv2.LINE_AA)


def draw_box_and_id(
    img: np.ndarray, box: np.ndarray, track_id: int | None, outline: bool = True, thickness: int = 2
) -> np.ndarray:
    """The person's box in its track colour (``outline``) and a ``#id`` tag on its top-left corner
    (``track_id`` not None)."""
    color = id_color(track_id if track_id is not None else 0)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if outline:
        cv2.rectangle(img, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
    if track_id is not None:
        _label(img, f"#{track_id}", (x0 - thickness // 2, y0 - thickness // 2), color)
    return img


def draw_patches(img: np.ndarray, person: Person) -> np.ndarray:
    """EViTPose pruning: each patch of the crop grid, darker the earlier it was pruned; patches kept through
    every pruning layer are left clear and outlined."""
    record = person.record
    if not record.kept_patches:
        return img
    rows, cols = record.grid
    survived = np.zeros(rows * cols, dtype=int)  # pruning layers each patch came through (kept sets nest)
    for kept in record.kept_patches:
        survived[np.asarray(kept, dtype=int)] += 1
    layers = len(record.kept_patches)
    quads = _crop_to_image(person, _box_quads(_grid_boxes(rows, cols, record.patch, record.patch)))
    dropped = survived < layers
    darkness = _PATCH_MAX_DARK * (layers - survived[dropped]) / layers
    _fill_quads(img, quads[dropped], np.zeros((int(dropped.sum()), 3)), darkness)
    if not dropped.all():
        cv2.polylines(img, _fixed(quads[~dropped]), True, _OUTLINE_BGR, 1, cv2.LINE_8, _SHIFT)
    return img


def draw_granularity(img: np.ndarray, person: Person) -> np.ndarray:
    """EMGPose: each coarse cell tinted by its level (whole / 2x2 / 3x3) with its sub-grid drawn; a
    ``coarse`` tag on the box when the fine stage did not run."""
    if person.record.granularity is None:
        return img
    level = np.asarray(person.record.granularity, dtype=int)
    if not level.any():
        _label(img, "coarse", (int(person.box[0]), int(person.box[3]) + 1), (90, 90, 90), below=True)
        return img
    rows, cols = level.shape
    cell_w = cell_h = person.record.patch
    boxes = _grid_boxes(rows, cols, cell_w, cell_h)
    level = level.reshape(-1)
    colors = np.array([_LEVEL_BGR.get(s, (128, 128, 128)) for s in level])
    quads = _crop_to_image(person, _box_quads(boxes))
    _fill_quads(img, quads, colors, np.full(len(boxes), _LEVEL_ALPHA))

    # The s - 1 interior cuts each way of every level-s cell, as (M, 2, 2) crop segments.
    x0, y0, x1, y1 = (boxes - 0.5).T
    cuts = [np.zeros((0, 2, 2))]
    for s in (2, 3):
        sel = level == s
        for k in range(1, s):
            x = x0[sel] + cell_w * k / s
            y = y0[sel] + cell_h * k / s
            cuts.append(np.stack([[x, y0[sel]], [x, y1[sel]]]).transpose(2, 0, 1))
            cuts.append(np.stack([[x0[sel], y], [x1[sel], y]]).transpose(2, 0, 1))
    cv2.polylines(img, _fixed(quads), True, _OUTLINE_BGR, 1, cv2.LINE_8, _SHIFT)
    cuts = _fixed(_crop_to_image(person, np.concatenate(cuts)))
    if len(cuts):
        cv2.polylines(img, cuts, False, _OUTLINE_BGR, 1, cv2.LINE_8, _SHIFT)
    return img


def final_groups(tokens: int, merge_groups: list[np.ndarray]) -> np.ndarray:
    """The group each of ``tokens`` fine-stage tokens ended in after every WBAS layer (-1: not run)."""
    group = np.arange(tokens)
    for dest in merge_groups:
        dest = np.asarray(dest, dtype=int).reshape(-1)
        valid = (group >= 0) & (group < len(dest))
        group = np.where(valid, dest[np.where(valid, group, 0)], -1)
    return group


def draw_merges(img: np.ndarray, person: Person) -> np.ndarray:
    """WBAS: the fine-stage token boxes, outlined and tinted by the group each ended in."""
    record = person.record
    if record.token_boxes is None:
        return img
    boxes = np.asarray(record.token_boxes, dtype=np.float64).reshape(-1, 4)
    group = final_groups(len(boxes), record.merge_groups)
    shown = (group >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not shown.any():
        return img
    quads = _crop_to_image(person, _box_quads(boxes[shown]))
    colors = palette(group[shown] % _MERGE_COLORS)
    _fill_quads(img, quads, colors, np.full(len(quads), _MERGE_ALPHA))
    cv2.polylines(img, _fixed(quads), True, _OUTLINE_BGR, 1, cv2.LINE_8, _SHIFT)
    return img


def joint_heat(grid: tuple[int, int], joint_attention: list[np.ndarray]) -> np.ndarray:
    """(rows, cols) of the stride-4 ``grid``: the stages' joint-token attention maps (a stage at stride
    4 * 2**s has ceil(rows / 2**s) rows), each spread evenly over the stride-4 cells its patches cover,
    summed; the part of a coarse patch that overhangs the crop is left out."""
    rows, cols = grid
    heat = np.zeros((rows, cols))
    for seen in joint_attention:
        side = 1 << math.ceil(math.log2(rows / len(seen)))
        heat += np.kron(np.asarray(seen, dtype=np.float64), np.ones((side, side)))[:rows, :cols] / side**2
    return heat


def draw_windows(img: np.ndarray, person: Person) -> np.ndarray:
    """UniTransPose: every stride-4 cell the joint tokens attended to more than the average one over all
    stages (``joint_heat``) tinted red, the most attended the most, and every stage's windows outlined in its
    colour, the coarsest on top."""
    record = person.record
    if not record.window_boxes:
        return img
    heat = joint_heat(record.grid, record.joint_attention).reshape(-1)
    above = np.clip((heat - heat.mean()) / max(heat.max() - heat.mean(), 1e-12), 0.0, 1.0)
    alpha = np.round(_HEAT_LEVELS * above) / _HEAT_LEVELS * _HEAT_MAX_ALPHA
    shown = alpha > 0
    cells = _grid_boxes(*record.grid, record.patch, record.patch)[shown]
    colors = np.tile(_HEAT_BGR, (len(cells), 1))
    _fill_quads(img, _crop_to_image(person, _box_quads(cells)), colors, alpha[shown])
    for stage, boxes in enumerate(record.window_boxes):
        quads = _fixed(_crop_to_image(person, _box_quads(boxes)))
        cv2.polylines(img, quads, True, _STAGE_BGR[min(stage, len(_STAGE_BGR) - 1)], 1, cv2.LINE_8, _SHIFT)
    return img


def _text_scale(img: np.ndarray) -> float:
    return max(0.35, img.shape[0] / 1200)


def draw_hud(img: np.ndarray, result: FrameResult) -> np.ndarray:
    """Frame statistics, top-left, white on a dark translucent panel (readable on any background)."""
    lines = [
        f"FPS {result.fps:.1f}",
        f"pose {result.pose_ms:.1f} ms",
        f"{result.gflops:.2f} GFLOPs",
        f"knob {result.knob:.2f}",
        f"people {len(result.people)}" + ("" if result.posed is None else f" (posed {result.posed})"),
        f"dropped {result.dropped}",
    ]
    scale = _text_scale(img)
    sizes = [cv2.getTextSize(text, _FONT, scale, 1) for text in lines]
    step = max(h + base for (_, h), base in sizes) + 4
    pad = 6
    x1 = min(img.shape[1], max(w for (w, _), _ in sizes) + 2 * pad)
    y1 = min(img.shape[0], step * len(lines) + pad)
    img[:y1, :x1] = (img[:y1, :x1] * 0.4).astype(np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(img, text, (pad, (i + 1) * step), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def draw_result(image_bgr: np.ndarray, result: FrameResult, overlays: Overlays) -> np.ndarray:
    """A copy of ``image_bgr`` with the chosen overlays drawn: region overlays first, then skeletons, then
    boxes and ids, then the HUD on top."""
    img = image_bgr.copy()
    for person in result.people:
        if overlays.patches:
            draw_patches(img, person)
        if overlays.granularity:
            draw_granularity(img, person)
        if overlays.merges:
            draw_merges(img, person)
        if overlays.windows:
            draw_windows(img, person)
    for person in result.people:
        thickness = line_thickness(person.box)
        if overlays.skeleton:
            draw_skeleton(
                img, person.keypoints, person.scores, thickness, overlays.min_score, overlays.confidence
            )
        if overlays.boxes or overlays.ids:
            track_id = person.track_id if overlays.ids else None
            draw_box_and_id(img, person.box, track_id, overlays.boxes, max(1, thickness // 2))
    if overlays.hud:
        draw_hud(img, result)
    return img
