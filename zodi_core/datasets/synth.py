"""Procedural street scenes with exact labels, written in the real dataset layouts (SPEC §4):
the demo's data and the tests' fixture.

A scene is drawn as a label map first, then rendered *from* it (so every label is exact) in a
look: ``city``, ``game`` or an ACDC condition. Each image has its own generator seeded by
``(seed, stream, index)``: it does not depend on how many others are made.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from zodi_core.datasets.io import encode_png
from zodi_core.labels import IGNORE_INDEX, train_ids_to_label_ids

# Train ids, named for readability of the drawing code (order of labels.CLASSES).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)

#: ACDC conditions rendered by :func:`write_synthetic` (SPEC §4).
CONDITIONS = ("night", "fog", "rain", "snow")
#: Looks accepted by :func:`render_scene`.
STYLES = ("city", "game", *CONDITIONS)

#: Two cities per Cityscapes split (names of the real ones).
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}
#: One GoPro-style sequence name per ACDC condition.
ACDC_SEQUENCES = {"night": "GOPR0351", "fog": "GOPR0475", "rain": "GOPR0573", "snow": "GOPR0607"}

#: Base colour per train id of the "city" look (RGB, 0..255, order of labels.CLASSES): plausible
#: street colours, chosen so that neighbouring classes differ (NOT the Cityscapes label palette).
_BASE_RGB = np.array([
    (92, 88, 96), (160, 146, 150), (120, 104, 92), (172, 164, 140), (126, 98, 70),  # road..fence
    (70, 72, 78), (34, 36, 38), (226, 196, 40), (56, 112, 42), (150, 160, 92),  # pole..terrain
    (132, 176, 228), (150, 60, 70), (190, 100, 40), (40, 60, 150), (190, 190, 196),  # sky..truck
    (214, 170, 30), (90, 140, 120), (20, 20, 24), (30, 130, 200),  # bus..bicycle
], dtype=np.float32)  # fmt: skip
#: The game look's own colours for the classes whose material differs (GTA-like: sun-bleached
#: asphalt close to the city's pavement, warm pavers, yellow-green foliage, dry verges, cyan sky).
_GAME_RGB = {
    ROAD: (150, 140, 128), SIDEWALK: (196, 158, 120), VEGETATION: (120, 160, 30),
    TERRAIN: (186, 150, 84), SKY: (96, 200, 236), WALL: (150, 120, 150),
}  # fmt: skip
#: The game sun's shadow on a pixel: colour * [0] + [1] (blue-grey, a game's ambient light).
_GAME_SHADE = (0.7, (6, 12, 28))
#: Classes whose instances get their own colour jitter (cars are not all the same colour).
_JITTERED = (BUILDING, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN)
_GROUND = (ROAD, SIDEWALK, TERRAIN)
#: (width, height) of each vehicle, in lane widths.
_VEHICLE_SIZE = {CAR: (0.45, 0.36), TRUCK: (0.6, 0.62), BUS: (0.62, 0.7), TRAIN: (0.8, 0.6)}

# Part codes drawn with the labels and used by the renderer (texture, not label).
_PART_WINDOW, _PART_WHEEL, _PART_LAMP = 1, 2, 3


class Scene:
    """A street scene drawn as labels, with the rendering hints drawn with them.

    Attributes:
        label: (H, W) uint8 train ids in 0..18, 255 for the ignored ego-vehicle band.
        instance: (H, W) int32 instance index (0: none), for per-instance colour jitter.
        part: (H, W) uint8 part code (windows, wheels, lamps) that shades but does not relabel.
        depth: (H, W) float32 in [0, 1], 0 at the horizon and 1 at the bottom row (fog density).
        horizon: row of the horizon.
        lights: (y, x, radius, (r, g, b)) light sources, lit by the night look.
        n_instances: how many instances are drawn.
    """

    def __init__(self, width: int, height: int, rng: np.random.Generator) -> None:
        self.w, self.h, self.rng = width, height, rng
        self.label = np.full((height, width), SKY, dtype=np.uint8)
        self.instance = np.zeros((height, width), dtype=np.int32)
        self.part = np.zeros((height, width), dtype=np.uint8)
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.n_instances = 0
        self.lights: list[tuple[float, float, float, tuple[int, int, int]]] = []
        # Road geometry: vanishing point (vx, horizon); at depth s (0 at the horizon, 1 at the
        # bottom) the road centre is vx + (cb - vx)·s, its half-width rw·s, then a sidewalk sw·s
        # and a terrain verge tw·s wide; each a fraction of the width drawn from its range.
        self.horizon = int(height * rng.uniform(0.38, 0.5))
        ranges = ((0.4, 0.6), (0.45, 0.55), (0.4, 0.6), (0.15, 0.3), (0.0, 0.35))
        self.vx, self.cb, self.rw, self.sw, self.tw = (width * rng.uniform(*r) for r in ranges)
        self.depth = np.clip((self.yy - self.horizon) / (height - self.horizon), 0.0, 1.0)

    def new_instance(self) -> int:
        self.n_instances += 1
        return self.n_instances

    def row(self, s: float) -> float:
        return self.horizon + s * (self.h - self.horizon)

    def centre(self, s: float) -> float:
        return self.vx + (self.cb - self.vx) * s

    def paint(self, mask: np.ndarray, cls: int, inst: int = 0, part: int = 0) -> None:
        self.label[mask] = cls
        self.instance[mask] = inst
        self.part[mask] = part

    def rect(self, x0, y0, x1, y1) -> np.ndarray:
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def ellipse(self, cx, cy, rx, ry) -> np.ndarray:
        rx, ry = max(rx, 0.6), max(ry, 0.6)
        return ((self.xx - cx) / rx) ** 2 + ((self.yy - cy) / ry) ** 2 <= 1.0


def _draw_facades(c: Scene) -> None:
    """Buildings and tree rows lining the street, with sky gaps; walls at their feet."""
    rng, x = c.rng, 0.0
    while x < c.w:
        bw = c.w * rng.uniform(0.08, 0.25)
        near_centre = abs(x + bw / 2 - c.vx) / c.w  # far blocks (near the vanishing point) are low
        top = c.horizon - c.h * rng.uniform(0.05, 0.2 + 0.6 * near_centre)
        kind = rng.choice(3, p=[0.7, 0.22, 0.08])
        if kind == 1:  # a row of trees
            c.paint(c.rect(x, c.horizon - 2, x + bw, c.h), VEGETATION)
            for _ in range(int(rng.integers(2, 5))):
                cx = x + rng.uniform(0, bw)
                c.paint(c.ellipse(cx, top + c.h * 0.06, bw * 0.35, c.h * 0.1), VEGETATION)
        else:  # a building; kind 2, a gap: distant buildings just above the horizon
            y0 = top if kind == 0 else c.horizon - c.h * 0.04
            c.paint(c.rect(x, y0, x + bw, c.h), BUILDING, c.new_instance())
        x += bw
    if rng.random() < 0.8:  # a wall along the base of one side
        left = rng.random() < 0.5
        x0, x1 = (
            (0.0, c.w * rng.uniform(0.15, 0.35)) if left else (c.w * rng.uniform(0.65, 0.85), c.w)
        )
        c.paint(c.rect(x0, c.horizon + c.h * rng.uniform(-0.05, 0.05), x1, c.h), WALL)


def _draw_ground(c: Scene) -> None:
    """Road, sidewalks, terrain verges and fences, in perspective toward the vanishing point."""
    below = (c.yy >= c.horizon) & (c.depth > 0)
    off = np.abs(c.xx - (c.vx + (c.cb - c.vx) * c.depth))
    verge = c.rw + c.sw + c.tw
    for cls, reach in ((TERRAIN, verge), (SIDEWALK, c.rw + c.sw), (ROAD, c.rw)):
        c.paint(below & (off < c.depth * reach), cls)
    if c.rng.random() < 0.7:  # a fence on the outer edge of one verge
        # per column: the depth s and row where the verge's outer line meets it
        sign = -1.0 if c.rng.random() < 0.5 else 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (np.arange(c.w, dtype=np.float32) + 0.5 - c.vx) / (c.cb - c.vx + sign * verge)
        s = np.where(np.isfinite(s) & (s > 0.02), s, np.nan)  # NaN: no fence (compares False)
        y_edge = c.horizon + s * (c.h - c.horizon)
        c.paint((c.yy >= y_edge - s * c.h * 0.18) & (c.yy < y_edge) & (c.label != ROAD), FENCE)


def _draw_street_furniture(c: Scene) -> None:
    """Poles with traffic lights or signs, and trees on the verges."""
    rng = c.rng
    for _ in range(int(rng.integers(2, 6))):
        s = rng.uniform(0.15, 0.9)
        left = rng.random() < 0.5
        x = c.centre(s) + (-1 if left else 1) * s * (c.rw + c.sw * rng.uniform(0.5, 0.9))
        y = c.row(s)
        ph, pw = s * c.h * rng.uniform(0.6, 0.9), max(1.0, s * c.w * 0.012)
        c.paint(c.rect(x - pw / 2, y - ph, x + pw / 2, y), POLE)
        top = y - ph
        kind = rng.choice(3)
        if kind == 0:  # traffic light: a dark box with three lamps, one lit
            bw, bh = pw * 3, s * c.h * 0.12
            c.paint(c.rect(x - bw / 2, top, x + bw / 2, top + bh), LIGHT)
            lit = int(rng.integers(3))
            colour = ((255, 40, 30), (255, 180, 20), (40, 255, 90))[lit]
            ly = top + bh * (lit + 0.5) / 3
            c.paint(c.ellipse(x, ly, bw * 0.3, bh * 0.13), LIGHT, part=_PART_LAMP)
            c.lights.append((ly, x, max(2.0, bh * 0.5), colour))
        elif kind == 1:  # traffic sign: a plate or a disc on the pole
            r = s * c.h * rng.uniform(0.04, 0.07)
            if rng.random() < 0.5:
                c.paint(c.ellipse(x, top + r, r, r), SIGN)
            else:
                c.paint(c.rect(x - r, top, x + r, top + 1.5 * r), SIGN)
        else:  # street lamp: pole only, a light at the top and its pool of light below
            c.lights.append((top, x, max(3.0, s * c.h * 0.12), (255, 220, 150)))
            c.lights.append((y, x, max(3.0, s * c.h * 0.2), (150, 125, 85)))
    for _ in range(int(rng.integers(0, 4))):  # trees: vegetation crown and trunk
        s = rng.uniform(0.2, 0.8)
        x = c.centre(s) + (-1 if rng.random() < 0.5 else 1) * s * (c.rw + c.sw + c.tw * 0.5)
        y, th = c.row(s), s * c.h * 0.5
        c.paint(c.rect(x - s * 2, y - th, x + s * 2, y), VEGETATION)
        c.paint(c.ellipse(x, y - th, s * c.w * 0.08, s * c.h * 0.18), VEGETATION)


def _draw_vehicle(c: Scene, cls: int, x: float, y: float, s: float) -> None:
    """A vehicle seen from behind, standing on row ``y`` at horizontal centre ``x``."""
    w, h = (f * (s * c.rw) for f in _VEHICLE_SIZE[cls])
    inst = c.new_instance()
    # a car's body is lower than its roof; the others are boxes with a band of windows
    top, wx, wy0, wy1 = (0.6, 0.38, 1.0, 0.6) if cls == CAR else (1.0, 0.42, 0.92, 0.62)
    c.paint(c.rect(x - w / 2, y - h * top, x + w / 2, y - h * 0.08), cls, inst)
    c.paint(c.rect(x - w * wx, y - h * wy0, x + w * wx, y - h * wy1), cls, inst, _PART_WINDOW)
    for x0, x1 in ((x - w * 0.45, x - w * 0.25), (x + w * 0.25, x + w * 0.45)):  # wheels
        c.paint(c.rect(x0, y - h * 0.12, x1, y), cls, inst, _PART_WHEEL)
    r = max(1.0, w * 0.06)
    for side in (-1, 1):  # tail lights, lit at night
        c.paint(c.ellipse(x + side * w * 0.4, y - h * 0.35, r, r), cls, inst, _PART_LAMP)
        c.lights.append((y - h * 0.35, x + side * w * 0.4, 2 * r, (255, 30, 20)))


def _draw_person(c: Scene, x: float, y: float, s: float, cls: int = PERSON) -> None:
    """A standing pedestrian (or a rider's upper body when ``cls`` is RIDER)."""
    ph = s * c.rw * 0.33
    inst = c.new_instance()
    c.paint(c.rect(x - ph * 0.1, y - ph * 0.82, x + ph * 0.1, y), cls, inst)
    c.paint(c.rect(x - ph * 0.14, y - ph * 0.82, x + ph * 0.14, y - ph * 0.4), cls, inst)
    c.paint(c.ellipse(x, y - ph * 0.9, ph * 0.08, ph * 0.09), cls, inst, _PART_WINDOW)


def _draw_two_wheeler(c: Scene, cls: int, x: float, y: float, s: float) -> None:
    """A bicycle or motorcycle seen from the side, with its rider (label RIDER)."""
    size = s * c.rw * (0.28 if cls == BICYCLE else 0.34)
    r = size * 0.25
    for dx in (-size * 0.35, size * 0.35):
        ring = c.ellipse(x + dx, y - r, r, r) & ~c.ellipse(x + dx, y - r, r * 0.6, r * 0.6)
        c.paint(ring, cls, part=_PART_WHEEL)
    c.paint(c.rect(x - size * 0.35, y - r * 1.3, x + size * 0.35, y - r * 0.8), cls)
    if cls == MOTORCYCLE:
        c.paint(c.rect(x - size * 0.2, y - r * 1.8, x + size * 0.25, y - r * 0.8), cls)
    _draw_person(c, x, y - r * 1.2, s * 0.85, cls=RIDER)


def _draw_agents(c: Scene) -> None:
    """Vehicles on the road and people on the sidewalks, drawn far to near (occlusion)."""
    rng = c.rng
    agents = []
    for _ in range(int(rng.integers(2, 7))):
        cls = int(rng.choice([CAR, CAR, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE]))
        agents.append((rng.uniform(0.2, 0.85), cls, rng.uniform(-0.7, 0.7)))
    for _ in range(int(rng.integers(1, 5))):
        side = -1 if rng.random() < 0.5 else 1
        agents.append((rng.uniform(0.25, 0.9), PERSON, side * rng.uniform(1.05, 1.0 + c.sw / c.rw)))
    for s, cls, offset in sorted(agents):
        x, y = c.centre(s) + offset * s * c.rw, c.row(s)
        if cls == PERSON:
            _draw_person(c, x, y, s)
        elif cls in (MOTORCYCLE, BICYCLE):
            _draw_two_wheeler(c, cls, x, y, s)
        else:
            _draw_vehicle(c, cls, x, y, s)


def generate_scene(rng: np.random.Generator, size: tuple[int, int] = (256, 128)) -> Scene:
    """Draw one street scene's labels; ``rng`` is its only randomness, ``size`` (width, height)."""
    width, height = size
    c = Scene(width, height, rng)
    _draw_facades(c)
    _draw_ground(c)
    _draw_street_furniture(c)
    _draw_agents(c)
    if rng.random() < 0.5:  # the ego vehicle's bonnet: ignored, as in Cityscapes
        bonnet = c.ellipse(width / 2, height * 1.18, width * 0.7, height * 0.24)
        c.paint(bonnet, IGNORE_INDEX)
    return c


def render_scene(scene: Scene, rng: np.random.Generator, style: str = "city") -> np.ndarray:
    """Render a scene's labels in ``style`` (one of :data:`STYLES`): (H, W, 3) uint8 RGB."""
    if style not in STYLES:
        raise ValueError(f"style: expected one of {STYLES}, received {style!r}")
    label, inst, part = scene.label, scene.instance, scene.part
    h, w = label.shape
    yy, xx = np.mgrid[0:h, 0:w]
    # 1. class colours (ignored pixels: dark ego-vehicle grey), per-instance jitter.
    lut = np.zeros((256, 3), dtype=np.float32)
    lut[:19] = _BASE_RGB
    if style == "game":  # a game's own materials: bleached asphalt, warm pavers, lush greens
        lut[list(_GAME_RGB)] = list(_GAME_RGB.values())
    lut[IGNORE_INDEX] = (38, 38, 42)
    img = lut[label]
    jitter = rng.uniform(-60, 60, size=(scene.n_instances + 1, 3)).astype(np.float32)
    jitter[0] = 0
    jittered = np.isin(label, _JITTERED)
    img[jittered] += jitter[inst[jittered]]
    # 2. textures that live inside classes: windows, tiles, lane marks, foliage, sky gradient.
    flat = style == "game"
    windows = (label == BUILDING) & ((xx // 5) % 3 == 1) & ((yy // 6) % 3 == 1)
    img[windows] = img[windows] * 0.45 + 20
    tiles = (label == SIDEWALK) & (((xx + yy // 2) % 11 == 0) | (yy % 7 == 0))
    img[tiles] *= 0.8
    road_centre = scene.centre(scene.depth[:, :1])  # (H, 1): lane marks on the centre line
    lane = (label == ROAD) & (np.abs(xx - road_centre) < 0.5 + scene.depth * 2)
    lane &= ((yy * 0.25 / np.maximum(scene.depth, 0.05)).astype(int) % 2) == 0
    img[lane] = (215, 215, 205)
    fence = (label == FENCE) & (((xx % 4) == 0) | ((yy % 4) == 0))
    img[fence] *= 0.55
    sky = label == SKY
    img[sky] *= (0.85 + 0.3 * yy[sky] / max(scene.horizon, 1))[:, None]
    img[part == _PART_WINDOW] = img[part == _PART_WINDOW] * 0.3 + (40, 55, 70)
    img[part == _PART_WHEEL] = (18, 18, 20)
    img[part == _PART_LAMP] = (230, 60, 40)
    if not flat:
        for cls, low, high in ((VEGETATION, 0.6, 1.3), (TERRAIN, 0.8, 1.15)):
            where = label == cls
            img[where] *= rng.uniform(low, high, size=(int(where.sum()), 1)).astype(np.float32)
        # Shading: nearer ground is brighter, like a sunlit street.
        img *= (0.85 + 0.2 * scene.depth)[..., None]
    # 3. the look.
    grey = img.mean(axis=2, keepdims=True)
    ground = np.isin(label, _GROUND)
    if style == "game":
        # GTA's sun: a warm grade, and the facades of one side cast a hard shadow over the
        # sidewalk and part of the road (blue-grey, as a game's ambient light renders it)
        side = 1.0 if rng.random() < 0.5 else -1.0
        reach = scene.rw * rng.uniform(-0.6, 0.5)
        off = (xx - scene.centre(scene.depth)) * side
        shadow = (
            (label < 19)
            & (label != SKY)
            & (scene.yy >= scene.horizon)
            & (off > reach * scene.depth)
        )
        img = grey + 1.7 * (img - grey)  # saturated
        img *= (1.12, 1.0, 0.8)
        img[shadow] = img[shadow] * _GAME_SHADE[0] + _GAME_SHADE[1]
        img = np.round(img / 24) * 24  # flat, posterised shading
    elif style == "night":
        # ACDC's night: low beams light the road ahead, lamps pools of street, a third of windows
        beam = scene.depth**1.2 * np.exp(-(((xx - w / 2) / (w * 0.45)) ** 2)) * (label < 19)
        img = img * (0.2 + 0.6 * beam)[..., None] + (0, 2, 12)
        img[lane] = np.asarray((215, 215, 205), np.float32) * (0.3 + 0.6 * beam[lane])[:, None]
        lit = windows & (rng.random((h // 6 + 1, w // 5 + 1)) < 0.35)[yy // 6, xx // 5]
        img[lit] = (220, 180, 105)
        img[sky] = (8, 10, 22) + (14, 12, 16) * (yy[sky] / max(scene.horizon, 1))[:, None] ** 2
        glow = np.zeros((h, w, 3), dtype=np.float32)  # Gaussian light sources, added at once
        for y, x, r, rgb in scene.lights:
            g = np.exp(-((scene.yy - y) ** 2 + (scene.xx - x) ** 2) / (2 * r * r))
            glow += g.astype(np.float32)[..., None] * (np.asarray(rgb, dtype=np.float32) * 0.9)
        img += glow
        img[part == _PART_LAMP] = (255, 200, 160)
    elif style == "fog":
        density = np.where(sky, 0.92, 0.88 - 0.45 * scene.depth)[..., None]
        img = img * (1 - density) + 200 * density
    elif style == "rain":
        img = (grey * 0.3 + img * 0.7) * 0.62
        # ACDC's wet streets: the asphalt mirrors what stands above it (facades, sky, cars),
        # rippled; rough paving and verges reflect less and keep their own colour; then the
        # windshield's water blurs the whole frame
        mirror = np.clip(2 * scene.horizon - yy + rng.integers(-1, 2, size=(h, w)), 0, h - 1)
        wet = ground | (label == IGNORE_INDEX)
        gloss = np.where((label == ROAD) | (label == IGNORE_INDEX), 0.75, 0.15)[wet][:, None]
        img[wet] = img[wet] * (1.1 - gloss) + img[mirror[wet], xx[wet]] * gloss
        img = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1) + np.roll(img, (1, 1), (0, 1))) / 4
        drops = rng.random((h, w)) < 0.01
        streaks = np.zeros((h, w), dtype=bool)
        for k in range(7):  # diagonal streaks: each drop smeared down-left
            streaks[k:, : w - k // 2] |= drops[: h - k, k // 2 :]
        img[streaks] = img[streaks] * 0.4 + 150
    elif style == "snow":
        img = img * 0.9 + 25
        img[ground] = img[ground] * 0.35 + 175
        img[sky] = (205, 208, 214)
        flakes = rng.random((h, w)) < 0.012
        img[flakes] = 250
    # 4. sensor noise.
    sigma = 2.0 if flat else 6.0
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * sigma
    return np.clip(img, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def cityscapes_palette() -> np.ndarray:
    """(256, 3) uint8 colour of each train id (MMSegmentation's Cityscapes palette; others black)."""
    from mmseg.datasets import CityscapesDataset

    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:19] = np.asarray(CityscapesDataset.METAINFO["palette"], dtype=np.uint8)
    return lut


def _files(dataset: str, part: str, i: int, label: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
    """Image ``i``'s path and ``{label path: label map to write}`` in ``dataset``'s layout (relative
    to its root; ``part``: the Cityscapes split or the ACDC condition; ``label``: train ids)."""
    if dataset == "gta5":
        return f"images/{i + 1:05d}.png", {f"labels/{i + 1:05d}.png": train_ids_to_label_ids(label)}
    if dataset == "acdc":
        name = f"{part}/val/{ACDC_SEQUENCES[part]}/{ACDC_SEQUENCES[part]}_frame_{100 + 7 * i:06d}"
        return f"rgb_anon/{name}_rgb_anon.png", {f"gt/{name}_gt_labelTrainIds.png": label}
    city = CITIES[part][i % 2]
    name = f"{part}/{city}/{city}_{i // 2:06d}_{19 + 10 * i:06d}"
    labels = {
        f"gtFine/{name}_gtFine_labelIds.png": train_ids_to_label_ids(label),
        f"gtFine/{name}_gtFine_color.png": cityscapes_palette()[label],
    }
    return f"leftImg8bit/{name}_leftImg8bit.png", labels


def write_synthetic(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: tuple[int, int] = (256, 128),
    n_train: int = 8,
    n_val: int = 4,
    n_target: int = 4,
    n_gta: int = 8,
) -> dict[str, Any]:
    """Write a synthetic Cityscapes (train, val), ACDC (each condition, val) and GTA5 set under
    ``out_dir`` in the readers' layouts; the same seed gives byte-identical files.

    Returns ``{"cityscapes": root, "acdc": root, "gta5": root, "counts": {...}}``.
    """
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size: expected (width, height), received {size!r}") from None
    if width < 32 or height < 32:
        raise ValueError(f"size: expected width and height >= 32, received {width}x{height}")
    for name, n in dict(n_train=n_train, n_val=n_val, n_target=n_target, n_gta=n_gta).items():
        if int(n) < 0:
            raise ValueError(f"{name}: expected an integer >= 0, received {n}")
    out = Path(out_dir)
    # (dataset, part, count key, images, seed stream, look): the labelled source in a city look;
    # ACDC, other scenes of the same kind in each condition's look; GTA5 in a game look, numbered
    # from 00001 like the release. Each stream is its own set of scenes.
    sets = [
        ("cityscapes", "train", "cityscapes_train", n_train, 0, "city"),
        ("cityscapes", "val", "cityscapes_val", n_val, 1, "city"),
        *[("acdc", c, f"acdc_{c}_val", n_target, 10 + k, c) for k, c in enumerate(CONDITIONS)],
        ("gta5", "", "gta5", n_gta, 20, "game"),
    ]
    counts: dict[str, int] = {}
    for dataset, part, key, n, stream, look in sets:
        for i in range(n):
            rng = np.random.default_rng([seed, stream, i])
            scene = generate_scene(rng, (width, height))
            image, labels = _files(dataset, part, i, scene.label)
            for path, array in {image: render_scene(scene, rng, look), **labels}.items():
                (out / dataset / path).parent.mkdir(parents=True, exist_ok=True)
                (out / dataset / path).write_bytes(encode_png(array))
        counts[key] = n
    return {name: str(out / name) for name in ("cityscapes", "acdc", "gta5")} | {"counts": counts}
