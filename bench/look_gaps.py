"""How far apart two ground classes look in each of the synthetic world's looks (issue 19).

A generated image keeps a class only if something in the look tells it from its neighbours; when
the look renders two classes alike, a ControlNet that follows the caption draws them as one
surface (rain's wet sidewalk drawn as road, docs/fidelity.md §2). For each pair of classes this
prints the median, over scenes holding both, of the distance between their mean RGB colours in
each look: the city look's figure is the source's, the others the targets'. The look
``game-shade`` is the game look on its shaded pixels only (the sun's shadow falls on a random
side, not given by the labels, so each class must look like itself in the shade too).

    python bench/look_gaps.py                       # road-sidewalk, sidewalk-terrain, road-terrain
    python bench/look_gaps.py --pairs sidewalk:terrain --looks city,game --n 24
    python bench/look_gaps.py --pairs road:wall,sidewalk:terrain --looks game,game-shade
"""

from __future__ import annotations

import argparse

import numpy as np

from zodi_core.datasets import synth
from zodi_core.datasets.synth import STYLES, generate_scene, render_scene
from zodi_core.labels import CLASSES

#: Looks measured besides the world's own: the game look's shaded pixels.
SHADE = "game-shade"


def pair_gap(a: int, b: int, look: str, n: int, size=(256, 128)) -> tuple[float, int]:
    """Median over ``n`` scenes (those with >= 30 pixels of each class) of |mean RGB a - mean RGB b|."""
    gaps = []
    for i in range(n):
        rng = np.random.default_rng([123, i])
        scene = generate_scene(rng, size)
        in_a, in_b = scene.label == a, scene.label == b
        if look == SHADE:
            img, shaded = _game_shade(scene, i)
            in_a, in_b = in_a & shaded, in_b & shaded
        else:
            img = render_scene(scene, np.random.default_rng(i), look).astype(np.float32)
        if in_a.sum() < 30 or in_b.sum() < 30:
            continue
        gaps.append(float(np.linalg.norm(img[in_a].mean(0) - img[in_b].mean(0))))
    return (float(np.median(gaps)) if gaps else float("nan")), len(gaps)


def _game_shade(scene, i: int) -> tuple[np.ndarray, np.ndarray]:
    """The game look of ``scene`` and its shaded pixels (where it differs from the same render
    without a shadow: same random numbers, the shade set to no change)."""
    shade = synth._GAME_SHADE
    img = render_scene(scene, np.random.default_rng(i), "game").astype(np.float32)
    try:
        synth._GAME_SHADE = (1.0, (0, 0, 0))
        bare = render_scene(scene, np.random.default_rng(i), "game").astype(np.float32)
    finally:
        synth._GAME_SHADE = shade
    return img, np.abs(img - bare).sum(-1) > 0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="road:sidewalk,sidewalk:terrain,road:terrain")
    ap.add_argument("--looks", default="city,night,snow,rain,fog,game")
    ap.add_argument("--n", type=int, default=12, help="scenes (256x128)")
    args = ap.parse_args(argv)
    looks = args.looks.split(",")
    for look in looks:
        if look not in (*STYLES, SHADE):
            ap.error(f"--looks: {look!r} is not a look; one of: {', '.join((*STYLES, SHADE))}")
    pairs = []
    for pair in args.pairs.split(","):
        names = pair.split(":")
        if len(names) != 2 or any(name not in CLASSES for name in names):
            ap.error(f"--pairs: {pair!r} is not CLASS:CLASS; classes: {', '.join(CLASSES)}")
        pairs.append(names)
    print(
        "| pair (median colour distance, RGB 0-255) | " + " | ".join(looks) + " | scenes (fewest) |"
    )
    print("|---" * (len(looks) + 2) + "|")
    for a, b in pairs:
        cells = [pair_gap(CLASSES.index(a), CLASSES.index(b), look, args.n) for look in looks]
        print(
            f"| {a} - {b} | "
            + " | ".join(f"{g:.1f}" for g, _ in cells)
            + f" | {min(c for _, c in cells)} |"
        )


if __name__ == "__main__":
    main()
