"""The synthetic street-scene generator: determinism, exact labels, real layouts, looks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zodi_cli import main
from zodi_core.datasets.synth import (
    CONDITIONS,
    STYLES,
    cityscapes_palette,
    generate_scene,
    render_scene,
    write_synthetic,
)
from zodi_core.labels import NUM_CLASSES, label_ids_to_train_ids

SKY, ROAD = 10, 0
GROUND = (0, 1, 9)  # road, sidewalk, terrain


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _scene(i: int = 0, style: str = "city"):
    rng = np.random.default_rng([123, i])
    scene = generate_scene(rng, (256, 128))
    return scene, render_scene(scene, rng, style)


def test_write_synthetic_same_seed_gives_identical_bytes(synthetic_root, tmp_path):
    write_synthetic(tmp_path, seed=0)
    assert _files(tmp_path) == _files(synthetic_root)


def test_write_synthetic_different_seed_differs(synthetic_root, tmp_path):
    write_synthetic(tmp_path, seed=1, n_train=2, n_val=0, n_target=1, n_gta=1)
    ours, base = _files(tmp_path), _files(synthetic_root)
    assert ours.keys() <= base.keys()
    assert all(ours[k] != base[k] for k in ours)


def test_write_synthetic_images_do_not_depend_on_counts(synthetic_root, tmp_path):
    # Each image has its own seed stream: asking for fewer images gives a prefix of the set.
    write_synthetic(tmp_path, seed=0, n_train=2, n_val=1, n_target=1, n_gta=1)
    ours, base = _files(tmp_path), _files(synthetic_root)
    assert len(ours) == 2 * 3 + 1 * 3 + 4 * 2 + 2
    assert all(ours[k] == base[k] for k in ours)


def test_write_synthetic_uses_the_public_layouts(synthetic_root):
    patterns = [
        r"cityscapes/leftImg8bit/(train|val)/(\w+)/\2_\d{6}_\d{6}_leftImg8bit\.png",
        r"cityscapes/gtFine/(train|val)/(\w+)/\2_\d{6}_\d{6}_gtFine_(labelIds|color)\.png",
        r"acdc/rgb_anon/(night|fog|rain|snow)/val/(GOPR\d{4})/\2_frame_\d{6}_rgb_anon\.png",
        r"acdc/gt/(night|fog|rain|snow)/val/(GOPR\d{4})/\2_frame_\d{6}_gt_labelTrainIds\.png",
        r"gta5/(images|labels)/\d{5}\.png",
    ]
    files = sorted(_files(synthetic_root))
    unmatched = [f for f in files if not any(re.fullmatch(p, f) for p in patterns)]
    assert unmatched == []
    count = {p: sum(bool(re.fullmatch(p, f)) for f in files) for p in patterns}
    assert list(count.values()) == [12, 24, 16, 16, 16]
    cities = {f.split("/")[3] for f in files if f.startswith("cityscapes/leftImg8bit/train/")}
    assert len(cities) == 2


def test_write_synthetic_label_files_agree(synthetic_root):
    """labelIds, colour and image of each Cityscapes frame describe the same scene."""
    palette = cityscapes_palette()
    for label_path in sorted((synthetic_root / "cityscapes/gtFine").rglob("*_labelIds.png")):
        train = label_ids_to_train_ids(_png(label_path))
        colour = _png(Path(str(label_path).replace("_labelIds", "_color")))
        np.testing.assert_array_equal(colour, palette[train])
        relative = label_path.relative_to(synthetic_root / "cityscapes/gtFine")
        image_path = synthetic_root / "cityscapes/leftImg8bit" / relative.parent
        image_path = image_path / label_path.name.replace("_gtFine_labelIds", "_leftImg8bit")
        assert _png(image_path).shape == (*train.shape, 3)
    for gt in (synthetic_root / "acdc/gt").rglob("*_gt_labelTrainIds.png"):
        values = set(np.unique(_png(gt)).tolist())
        assert values <= set(range(NUM_CLASSES)) | {255}


def test_cityscapes_palette_is_mmsegs():
    from mmseg.datasets import CityscapesDataset

    palette = cityscapes_palette()
    assert palette[:19].tolist() == [list(c) for c in CityscapesDataset.METAINFO["palette"]]
    assert palette[255].tolist() == [0, 0, 0]


def test_write_synthetic_train_split_covers_all_classes(synthetic_root):
    present: set[int] = set()
    for p in (synthetic_root / "cityscapes/gtFine/train").rglob("*_labelIds.png"):
        present |= set(np.unique(label_ids_to_train_ids(_png(p))).tolist())
    assert set(range(NUM_CLASSES)) <= present


def test_render_scene_is_a_function_of_the_labels():
    """Every class in the label is recognisable from colour alone, and edges follow labels."""
    for i in range(3):
        scene, image = _scene(i)
        img = image.astype(np.float32)
        classes = [c for c in np.unique(scene.label) if c != 255]
        means = np.stack([img[scene.label == c].mean(axis=0) for c in classes])
        dist = ((img[..., None, :] - means[None, None]) ** 2).sum(-1)
        pred = np.asarray(classes)[dist.argmin(-1)]
        valid = scene.label != 255
        # Nearest class colour recovers most pixels (random labels would give ~1/len(classes)).
        assert (pred[valid] == scene.label[valid]).mean() > 0.6
        grad = np.abs(np.diff(img, axis=1)).sum(-1)
        boundary = scene.label[:, 1:] != scene.label[:, :-1]
        assert grad[boundary].mean() > 3 * grad[~boundary].mean()


def test_render_scene_changing_a_label_changes_only_those_pixels():
    rng = np.random.default_rng(5)
    scene = generate_scene(rng)
    base = render_scene(scene, np.random.default_rng(9), "game")
    changed = scene.label == ROAD
    scene.label[changed] = 9  # road → terrain
    after = render_scene(scene, np.random.default_rng(9), "game")
    diff = np.abs(after.astype(int) - base.astype(int)).sum(-1) > 0
    assert diff[changed].mean() > 0.9
    # The game look draws the same random numbers whatever the labels: the rest is untouched.
    np.testing.assert_array_equal(after[~changed], base[~changed])


def test_render_scene_conditions_have_their_look():
    scene, city = _scene(1)
    looks = {style: render_scene(scene, np.random.default_rng(0), style) for style in STYLES}
    lum = {k: v.astype(np.float32).mean(-1) for k, v in looks.items()}
    ground = np.isin(scene.label, GROUND)
    assert lum["night"].mean() < 0.5 * lum["city"].mean()
    assert lum["fog"].std() < 0.6 * lum["city"].std()
    assert lum["rain"].mean() < lum["city"].mean()
    assert lum["snow"][ground].mean() > lum["city"][ground].mean() + 40

    def saturation(img):
        img = img.astype(np.float32)
        return (img.max(-1) - img.min(-1)).mean()

    assert saturation(looks["game"]) > 1.3 * saturation(looks["city"])


def test_rain_streets_are_wet_and_game_has_its_own_materials_and_sun():
    """The looks that make rain and game a domain gap (issue 19): rain's ground mirrors what
    stands above the horizon (ACDC's wet streets); game's road, sidewalk and foliage have colours
    of their own (GTA's materials, not the city's recoloured) and one side of the street lies in
    a hard shadow."""
    ROAD, SIDEWALK, VEGETATION = 0, 1, 8
    corr_rain, corr_city, road_shift, shadowed = [], [], [], []
    for i in range(6):
        scene, _ = _scene(i)
        looks = {st: render_scene(scene, np.random.default_rng(i), st) for st in ("city", "rain", "game")}  # fmt: skip
        h, hz = scene.label.shape[0], scene.horizon
        rows = np.arange(hz + 1, min(h, 2 * hz))  # ground rows whose mirror row is in the frame
        for look, out in (("rain", corr_rain), ("city", corr_city)):
            lum = looks[look].astype(np.float32).mean(-1)
            ground = np.isin(scene.label[rows], GROUND)
            below, above = lum[rows][ground], lum[2 * hz - rows][ground]
            out.append(np.corrcoef(below, above)[0, 1])
        city, game = (looks[k].astype(np.float32) for k in ("city", "game"))
        for cls in (ROAD, SIDEWALK, VEGETATION):
            where = scene.label == cls
            if where.sum() > 50:
                road_shift.append(np.abs(city[where].mean(0) - game[where].mean(0)).max())
        road = scene.label == ROAD
        left = road & (scene.xx < scene.centre(scene.depth))
        right = road & ~left
        lum = game.mean(-1)
        shadowed.append(abs(lum[left].mean() - lum[right].mean()) > 15 or lum[road].std() > 20)
    assert np.mean(corr_rain) > np.mean(corr_city) + 0.2
    assert np.median(road_shift) > 30
    assert np.mean(shadowed) >= 0.5


def test_game_shadow_keeps_each_class_its_own_colour(monkeypatch):
    """The game sun's shadow falls where the labels do not say (a random side and reach), so in
    the shade every class must still look like itself: the mean shaded colours of road and wall,
    sidewalk and terrain (alike at x0.45 + blue: 1 and 8 apart) stay more than 20 apart."""
    from zodi_core.datasets import synth

    ROAD, SIDEWALK, WALL, TERRAIN = 0, 1, 3, 9
    shaded = {c: [] for c in (ROAD, SIDEWALK, WALL, TERRAIN)}
    for i in range(12):
        scene, _ = _scene(i)
        sunlit = synth._GAME_SHADE
        monkeypatch.setattr(synth, "_GAME_SHADE", (1.0, (0, 0, 0)))  # the same scene, no shadow
        bare = render_scene(scene, np.random.default_rng(i), "game").astype(np.float32)
        monkeypatch.setattr(synth, "_GAME_SHADE", sunlit)
        game = render_scene(scene, np.random.default_rng(i), "game").astype(np.float32)
        shade = np.abs(game - bare).sum(-1) > 0
        for c, out in shaded.items():
            out.append(game[shade & (scene.label == c)])
    mean = {c: np.concatenate(v).mean(0) for c, v in shaded.items()}
    assert all(len(np.concatenate(v)) > 500 for v in shaded.values())  # the shadow is there
    assert np.linalg.norm(mean[ROAD] - mean[WALL]) > 20
    assert np.linalg.norm(mean[SIDEWALK] - mean[TERRAIN]) > 20


def test_rain_mirrors_the_asphalt_and_the_paving_keeps_its_colour():
    """Rain's road mirrors; its sidewalk reflects less and keeps its own colour (issue 19: with
    every ground class mirrored alike, only a tint told road from sidewalk, and the generations
    drew the wet sidewalk as road). Measured: the road-sidewalk colour gap of the rain look over
    the city look's, 0.11 (median of 12 scenes) when the sidewalk mirrored like the road."""
    ROAD, SIDEWALK = 0, 1
    ratios = []
    for i in range(12):
        scene, _ = _scene(i)
        road, side = scene.label == ROAD, scene.label == SIDEWALK
        if side.sum() < 30:
            continue
        gap = {}
        for look in ("city", "rain"):
            img = render_scene(scene, np.random.default_rng(i), look).astype(np.float32)
            gap[look] = np.linalg.norm(img[road].mean(0) - img[side].mean(0))
        ratios.append(gap["rain"] / gap["city"])
    assert len(ratios) >= 6
    assert np.median(ratios) > 0.2


def test_render_scene_rejects_unknown_style():
    scene, _ = _scene()
    with pytest.raises(ValueError, match=r"style: expected one of .* received 'dusk'"):
        render_scene(scene, np.random.default_rng(0), "dusk")


def test_write_synthetic_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size: expected width and height >= 32, received 16x128"):
        write_synthetic(tmp_path, size=(16, 128))
    with pytest.raises(ValueError, match="n_val: expected an integer >= 0, received -1"):
        write_synthetic(tmp_path, n_val=-1)


def test_acdc_targets_are_other_scenes(synthetic_root):
    cs = {p.name: _png(p) for p in (synthetic_root / "cityscapes/gtFine").rglob("*_labelIds.png")}
    cs_train = [label_ids_to_train_ids(v) for v in cs.values()]
    for condition in CONDITIONS:
        for gt in (synthetic_root / "acdc/gt" / condition).rglob("*.png"):
            assert not any(np.array_equal(_png(gt), t) for t in cs_train)


def test_cli_synth_writes_and_reports_json(tmp_path, capsys):
    code = main(
        ["synth", "--out", str(tmp_path), "--seed", "3", "--size", "64x32", "--n-train", "2",
         "--n-val", "1", "--n-target", "1", "--n-gta", "1", "--json"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["ok"] and summary["counts"]["cityscapes_train"] == 2
    assert Path(summary["gta5"]) == tmp_path / "gta5"
    image = _png(next((tmp_path / "gta5/images").glob("*.png")))
    assert image.shape == (32, 64, 3)


def test_cli_synth_rejects_bad_size(tmp_path, capsys):
    # A usage error: exit 2 and one line (main returns it rather than raising SystemExit).
    assert main(["synth", "--out", str(tmp_path), "--size", "256by128"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("zodi synth: error: argument --size")
    assert "expected WIDTHxHEIGHT" in err


def test_look_gaps_bench_measures_the_rain_mirror(capsys):
    """bench/look_gaps.py prints each look's colour distance between two classes: rain's mirrored
    asphalt sits closer to its sidewalk than the city's does; a bad pair is one line, not a trace."""
    from test_pocket import _bench

    bench = _bench("look_gaps")
    bench.main(["--pairs", "road:sidewalk", "--looks", "city,rain", "--n", "6"])
    row = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| road - sidewalk")
    ]
    city, rain, scenes = (float(cell) for cell in row[0].strip("|").split("|")[1:])
    assert scenes >= 3 and city > 2 * rain > 0
    # The game look's shaded pixels alone: darker, so road and wall sit closer together than in
    # the whole look (the pair the shade once made alike: 1 apart at x0.45 + blue).
    bench.main(["--pairs", "road:wall", "--looks", "game,game-shade", "--n", "6"])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| road")]
    game, shade, scenes = (float(cell) for cell in row[0].strip("|").split("|")[1:])
    assert scenes >= 3 and game > shade > 0
    with pytest.raises(SystemExit):
        bench.main(["--pairs", "road:kerb"])
    assert "'road:kerb' is not CLASS:CLASS" in capsys.readouterr().err
