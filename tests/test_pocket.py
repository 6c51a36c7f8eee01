"""Pocket models: the corpus, the tokenizer, a short training (loss goes down, the folder loads
through load_components and runs in the ZoDi sampler), resumption after an interruption."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from zodi_core import manifest
from zodi_core.conditions import render_condition
from zodi_core.config import ModelsConfig, TransferConfig
from zodi_core.datasets import synth
from zodi_core.pocket import build_pocket_models
from zodi_core.pocket.corpus import (
    CORPUS_DOMAINS,
    caption_for,
    read_corpus,
    write_corpus,
    write_tokenizer,
)
from zodi_core.pocket.train import PRESETS, train_pocket, training_noise
from zodi_core.transfer.models import load_components
from zodi_core.transfer.sampler import TransferSampler

SMOKE = PRESETS["smoke"]


@pytest.fixture(scope="module")
def corpus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("corpus")
    return write_corpus(out, seed=0, size=(128, 64), n_per_domain=2, n_heldout=1)


@pytest.fixture(scope="module")
def smoke_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pocket")
    card = build_pocket_models(out, preset="smoke", measure=True, progress=False)
    return out, card


def test_corpus_captions_are_the_papers_prompts_and_read_back_through_the_manifest(corpus_uri):
    assert caption_for("night") == "driving at night, best quality"
    assert caption_for("clear") == "driving, best quality"
    table = manifest.read_manifest(corpus_uri, "samples")
    assert set(table.column("domain").to_pylist()) == set(CORPUS_DOMAINS)
    train = read_corpus(corpus_uri, "train")
    assert len(train) == 2 * len(CORPUS_DOMAINS)
    assert train.images.shape == (len(train), 64, 128, 3) and train.labels.shape == (
        len(train),
        64,
        128,
    )
    assert all(c == caption_for(d) for c, d in zip(train.captions, train.domains, strict=True))
    assert len(read_corpus(corpus_uri, "heldout")) == len(CORPUS_DOMAINS)


def test_corpus_scenes_are_not_the_source_or_target_scenes(corpus_uri, tmp_path):
    roots = synth.write_synthetic(
        tmp_path, seed=0, size=(128, 64), n_train=4, n_val=2, n_target=2, n_gta=2
    )
    from zodi_core.datasets.io import decode_png

    theirs = {
        decode_png(p.read_bytes(), str(p)).tobytes()
        for root in (roots["cityscapes"], roots["acdc"], roots["gta5"])
        for p in Path(root).rglob("*.png")
        if "labelIds" in p.name or "TrainIds" in p.name or p.parent.name == "labels"
    }
    ours = read_corpus(corpus_uri, "train").labels
    assert theirs and not any(lab.tobytes() in theirs for lab in ours)


def test_tokenizer_spells_every_caption_word_as_one_token(tmp_path):
    captions = [caption_for(d) for d in CORPUS_DOMAINS]
    tok = write_tokenizer(tmp_path / "tok", [*captions, "lower quality, worst quality"])
    pieces = tok.convert_ids_to_tokens(tok("driving in a game, best quality").input_ids)
    assert pieces == [
        "<|startoftext|>", "driving</w>", "in</w>", "a</w>", "game</w>", ",</w>", "best</w>",
        "quality</w>", "<|endoftext|>",
    ]  # fmt: skip
    assert len(set(map(tuple, tok(captions).input_ids))) == len(captions)  # all distinct


def test_short_training_lowers_the_loss_and_writes_a_card(smoke_models):
    out, card = smoke_models
    for phase in ("vae", "unet", "controlnet"):
        p = card["phases"][phase]
        assert p["steps"] == SMOKE.steps(phase)
        assert p["fixed_batch_loss_after"] < p["fixed_batch_loss_before"], phase
    assert card["phases"]["vae"]["scaling_factor"] > 0
    q = card["quality"]
    assert np.isfinite(q["vae_psnr_db"])
    assert set(q["text_conditioning"]["classifier_accuracy_generated"]) == set(CORPUS_DOMAINS)
    assert "miou_controlnet_generations" in q["layout_following"]
    text = (out / "MODEL_CARD.md").read_text()
    assert "VAE reconstruction PSNR" in text and "| controlnet | 12 |" in text
    assert json.loads((out / "card.json").read_text())["preset"] == "smoke"
    # CPU threads change the weights' last bits (then the training's course): the card names them
    threads = torch.get_num_threads()
    assert (
        card["command"]
        == f"zodi pocket-models --out DIR --preset smoke --seed 0 --threads {threads}"
    )
    assert (out / "samples.png").is_file()


def test_saved_folder_loads_through_load_components_and_runs_the_sampler(smoke_models):
    out, _ = smoke_models
    c = load_components(ModelsConfig(base=str(out), controlnet=None), "cpu")
    assert type(c.unet).__name__ == "UNet2DConditionModel"
    assert type(c.controlnet).__name__ == "ControlNetModel"
    assert type(c.text_encoder).__name__ == "CLIPTextModel"
    assert c.scheduler.config.beta_schedule == "scaled_linear"
    assert c.scheduler.config.prediction_type == "epsilon"
    assert c.vae.config.scaling_factor == pytest.approx(
        json.loads((out / "training_state.json").read_text())["phases"]["vae"]["scaling_factor"]
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    label = np.full((64, 128), 10, dtype=np.uint8)
    cfg = TransferConfig.preset("demo", num_inference_steps=4)
    result = TransferSampler(c, cfg)([image], [label], ["f0"])[0]
    assert result.image.shape == (64, 128, 3)


def test_generate_passes_the_conditioning_scale_to_the_pipeline(smoke_models):
    """``generate(control_scale=k)`` (layout_ceiling's diagnosis) reaches the ControlNet as its
    ``conditioning_scale`` at every step (the default: SPEC's 1.0), and 0 gives the UNet alone.
    The smoke ControlNet's zero convolutions are given weights so that it acts."""
    from zodi_core.pocket.measure import generate

    out, _ = smoke_models
    c = load_components(ModelsConfig(base=str(out), controlnet=None), "cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for conv in [*c.controlnet.controlnet_down_blocks, c.controlnet.controlnet_mid_block]:
            conv.weight.normal_(0, 0.5)
    seen, forward = [], c.controlnet.forward

    def recording(*args, **kwargs):
        seen.append(kwargs["conditioning_scale"])
        return forward(*args, **kwargs)

    c.controlnet.forward = recording
    label = np.zeros((2, 64, 128), dtype=np.uint8)
    label[:, 32:] = 10  # sky over road
    conds = np.stack([render_condition(lab, "ade20k") for lab in label])
    run = functools.partial(generate, c, [caption_for("clear")] * 2, 0, steps=3)
    alone = run(None).astype(int)
    by_scale = {}
    for k in (None, 0.0, 2.0):
        seen.clear()
        by_scale[k] = run(conds, **({} if k is None else {"control_scale": k})).astype(int)
        assert seen == [1.0 if k is None else k] * 3  # one call a step (CFG batched)
    assert np.abs(by_scale[0.0] - alone).max() <= 1
    assert np.abs(by_scale[None] - alone).mean() > 1  # the smoke decoder is dull: ~3 levels
    assert not np.array_equal(by_scale[2.0], by_scale[None])


def _train_stopped_at(monkeypatch, corpus, out, spec, phase: str, step: int) -> None:
    """Train ``spec`` into ``out`` as if the process were stopped when ``phase``'s ``step`` is
    drawn."""
    from zodi_core.pocket import train as train_mod

    real = train_mod.step_generator

    def failing(seed, at_phase, at_step):
        if (at_phase, at_step) == (phase, step):
            raise KeyboardInterrupt
        return real(seed, at_phase, at_step)

    monkeypatch.setattr(train_mod, "step_generator", failing)
    with pytest.raises(KeyboardInterrupt):
        train_pocket(corpus, out, spec, progress=False)
    monkeypatch.setattr(train_mod, "step_generator", real)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, corpus_uri, monkeypatch):
    corpus = read_corpus(corpus_uri, "train")
    spec = replace(SMOKE, vae_steps=6, unet_steps=6, controlnet_steps=4, checkpoint_every=2)
    straight = train_pocket(corpus, tmp_path / "a", spec, progress=False)

    _train_stopped_at(monkeypatch, corpus, tmp_path / "b", spec, "unet", 3)  # checkpoint: 2
    state = json.loads((tmp_path / "b" / "training_state.json").read_text())
    assert list(state["phases"]) == ["vae"]  # the unet phase did not finish
    assert (tmp_path / "b" / "checkpoints" / "unet.pt").is_file()
    resumed = train_pocket(corpus, tmp_path / "b", spec, progress=False)
    assert resumed["unet"]["steps"] == 6
    for sub in ("unet", "text_encoder", "controlnet"):
        cls = {"unet": "UNet2DConditionModel", "controlnet": "ControlNetModel"}.get(sub)
        if cls:
            import diffusers

            load = getattr(diffusers, cls).from_pretrained
        else:
            from transformers import CLIPTextModel

            load = CLIPTextModel.from_pretrained
        a, b = load(tmp_path / "a" / sub).state_dict(), load(tmp_path / "b" / sub).state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{sub}.{key}")
    assert straight["unet"]["loss_last"] == resumed["unet"]["loss_last"]


def test_offset_noise_moves_each_latent_channels_mean_and_is_off_by_default():
    """v7's offset noise hides the mean that SD's schedule leaks at t = 999: the per-image,
    per-channel spatial mean of ε spreads by about the offset (plain ε: 1/√(H·W)); with offset 0
    the draw is bit for bit the one the earlier presets were trained with."""
    shape = (512, 4, 16, 32)
    plain = training_noise(shape, torch.Generator().manual_seed(0), 0.0)
    torch.testing.assert_close(
        plain, torch.randn(shape, generator=torch.Generator().manual_seed(0)), rtol=0, atol=0
    )
    offset = training_noise(shape, torch.Generator().manual_seed(0), 0.1)
    assert float(plain.mean(dim=(2, 3)).std()) == pytest.approx((16 * 32) ** -0.5, rel=0.1)
    assert float(offset.mean(dim=(2, 3)).std()) == pytest.approx((0.01 + 1 / 512) ** 0.5, rel=0.1)
    assert float(offset.std()) == pytest.approx(1.005, abs=0.01)  # barely more noise overall


def test_controlnet_ema_is_what_gets_saved(tmp_path, corpus_uri):
    """With ``controlnet_ema`` the ControlNet phase checkpoints an EMA and saves its weights, not
    the last step's."""
    from diffusers import ControlNetModel

    corpus = read_corpus(corpus_uri, "train")
    spec = replace(SMOKE, vae_steps=2, unet_steps=2, controlnet_steps=4, controlnet_ema=True,
                   noise_offset=0.1)  # fmt: skip
    train_pocket(corpus, tmp_path, spec, progress=False)
    state = torch.load(tmp_path / "checkpoints" / "controlnet.pt", weights_only=False)
    saved = ControlNetModel.from_pretrained(tmp_path / "controlnet").state_dict()
    shadow = state["parts"]["ema"]["shadow_params"]
    raw = state["parts"]["controlnet"]
    trained = [k for k in raw if raw[k].dtype.is_floating_point]
    assert len(shadow) == len(trained) == len(saved)
    for key, ema_value in zip(trained, shadow, strict=True):
        torch.testing.assert_close(saved[key], ema_value, rtol=0, atol=0)
    assert any(not torch.equal(saved[k], raw[k]) for k in trained)


def test_a_folder_of_another_training_is_refused(tmp_path, corpus_uri):
    corpus = read_corpus(corpus_uri, "train")
    spec = replace(SMOKE, vae_steps=2, unet_steps=2, controlnet_steps=2)
    train_pocket(corpus, tmp_path, spec, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train_pocket(corpus, tmp_path, replace(spec, seed=1), progress=False)


def test_cosine_controlnet_schedule_decays_to_zero_and_resumes_to_the_same_weights(
    tmp_path, corpus_uri, monkeypatch
):
    """``controlnet_lr_schedule="cosine"`` (v8): the ControlNet's learning rate falls to 0 at the
    last step, and a run interrupted mid-phase resumes the schedule where it was."""
    from diffusers import ControlNetModel

    corpus = read_corpus(corpus_uri, "train")
    spec = replace(SMOKE, vae_steps=2, unet_steps=2, controlnet_steps=6, checkpoint_every=2,
                   controlnet_lr_schedule="cosine")  # fmt: skip
    train_pocket(corpus, tmp_path / "a", spec, progress=False)
    state = torch.load(tmp_path / "a" / "checkpoints" / "controlnet.pt", weights_only=False)
    assert state["parts"]["lr_scheduler"]["_last_lr"] == [0.0]
    constant = replace(spec, controlnet_lr_schedule="constant")
    train_pocket(corpus, tmp_path / "c", constant, progress=False)
    state = torch.load(tmp_path / "c" / "checkpoints" / "controlnet.pt", weights_only=False)
    assert state["parts"]["lr_scheduler"]["_last_lr"] == [spec.controlnet_lr]

    _train_stopped_at(monkeypatch, corpus, tmp_path / "b", spec, "controlnet", 3)  # checkpoint: 2
    assert (tmp_path / "b" / "checkpoints" / "controlnet.pt").is_file()
    train_pocket(corpus, tmp_path / "b", spec, progress=False)
    a, b, c = (
        ControlNetModel.from_pretrained(tmp_path / x / "controlnet").state_dict() for x in "abc"
    )
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the schedule is applied


def test_controlnet_palette_draws_the_training_and_the_cards_condition_maps(
    tmp_path, corpus_uri, smoke_models, monkeypatch
):
    """``controlnet_palette`` (v9's trial) is the palette the ControlNet is trained on, and
    ``measure_quality`` draws the card's maps in the palette it is given."""
    from zodi_core.pocket import measure
    from zodi_core.pocket import train as train_mod

    def recording(module):
        calls, real = [], module.render_condition

        def render(label, palette):
            calls.append(palette)
            return real(label, palette)

        monkeypatch.setattr(module, "render_condition", render)
        return calls

    corpus = read_corpus(corpus_uri, "train")
    calls = recording(train_mod)
    spec = replace(SMOKE, vae_steps=1, unet_steps=1, controlnet_steps=1)
    train_pocket(corpus, tmp_path / "a", replace(spec, controlnet_palette="cityscapes"))
    assert calls == ["cityscapes"] * len(corpus)
    calls.clear()
    train_pocket(corpus, tmp_path / "b", spec, progress=False)
    assert calls == ["ade20k"] * len(corpus)  # the default: SD's ControlNet seg's

    calls = recording(measure)
    c = load_components(ModelsConfig(base=str(smoke_models[0]), controlnet=None), "cpu")
    held = read_corpus(corpus_uri, "heldout")
    small = {"n_per_prompt": 1, "steps": 1, "classifier_steps": 1}
    measure.measure_quality(c, corpus, held, palette="cityscapes", **small)
    assert calls and set(calls) == {"cityscapes"}


def test_a_training_written_before_a_spec_field_existed_reads_as_its_default(tmp_path, corpus_uri):
    """A field is added with the default that keeps the old behaviour, so a folder whose
    training_state.json predates it (the committed v7 weights) is the same training under the
    default, and another training under any other value."""
    corpus = read_corpus(corpus_uri, "train")
    spec = replace(SMOKE, vae_steps=2, unet_steps=2, controlnet_steps=2)
    train_pocket(corpus, tmp_path, spec, progress=False)
    path = tmp_path / "training_state.json"
    state = json.loads(path.read_text())
    del state["spec"]["controlnet_lr_schedule"]
    path.write_text(json.dumps(state))
    assert set(train_pocket(corpus, tmp_path, spec, progress=False)) == set(state["phases"])
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="other settings"):
        train_pocket(corpus, tmp_path, replace(spec, controlnet_lr_schedule="cosine"))


def test_cli_refuses_a_device_it_cannot_train_on_before_writing_the_corpus(tmp_path, capsys):
    from zodi_cli import main

    code = main(["pocket-models", "--out", str(tmp_path / "p"), "--preset", "smoke",
                 "--device", "tpu"])  # fmt: skip
    assert code == 2 and "device: expected 'auto', 'cpu', 'cuda'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        code = main(["pocket-models", "--out", str(tmp_path / "p"), "--preset", "smoke",
                     "--device", "cuda"])  # fmt: skip
        assert code == 2 and "no CUDA device is available" in capsys.readouterr().err
    assert not (tmp_path / "p" / "corpus").exists()


def test_cli_names_every_preset_when_refusing_an_unknown_one(tmp_path, capsys):
    from zodi_cli import main

    code = main(["pocket-models", "--out", str(tmp_path / "p"), "--preset", "v99"])
    err = capsys.readouterr().err
    assert code == 2 and "preset: expected one of" in err and "'v99'" in err
    assert all(f"'{name}'" in err for name in PRESETS)
    assert not (tmp_path / "p" / "corpus").exists()


def test_every_preset_builds_a_controlnet_as_wide_as_its_unet_and_is_in_the_help(capsys):
    """Each named size builds (v10: the 1.5x-wide trial), its ControlNet copies the UNet's
    encoder widths, and ``zodi pocket-models --help`` describes every name PRESETS holds."""
    from zodi_cli import main
    from zodi_core.pocket.train import build_controlnet, build_unet

    for name, spec in PRESETS.items():
        unet = build_unet(spec)
        controlnet = build_controlnet(unet, spec)
        assert tuple(unet.config.block_out_channels) == spec.unet_channels, name
        assert controlnet.config.block_out_channels == unet.config.block_out_channels, name
    assert PRESETS["v10"].unet_channels == (48, 96, 96)
    with pytest.raises(SystemExit):
        main(["pocket-models", "--help"])
    described = set(re.findall(r"(\w+)[,:]", capsys.readouterr().out))
    assert set(PRESETS) <= described, set(PRESETS) - described


@pytest.mark.gpu
def test_training_on_cuda_starts_where_cpu_does_and_loads_on_cpu(tmp_path, corpus_uri):
    """The same initial weights and CPU-drawn batches on either device: the fixed batch's loss
    before training agrees (float rounding, TF32 convolutions), training lowers it on both, and
    the CUDA-trained folder loads on CPU through load_components."""
    corpus = read_corpus(corpus_uri, "train")
    cpu = train_pocket(corpus, tmp_path / "cpu", SMOKE, progress=False)
    cuda = train_pocket(corpus, tmp_path / "cuda", SMOKE, progress=False, device="cuda")
    for phase in ("vae", "unet", "controlnet"):
        a, b = cpu[phase], cuda[phase]
        assert b["steps"] == a["steps"]
        assert b["fixed_batch_loss_before"] == pytest.approx(a["fixed_batch_loss_before"], rel=2e-2)
        assert b["fixed_batch_loss_after"] < b["fixed_batch_loss_before"], phase
    c = load_components(ModelsConfig(base=str(tmp_path / "cuda"), controlnet=None))
    assert next(c.unet.parameters()).device.type == "cpu"


def test_cli_on_a_trained_folder_skips_training_and_reports(smoke_models, capsys):
    from zodi_cli import main

    out, card = smoke_models
    code = main(["pocket-models", "--out", str(out), "--preset", "smoke", "--no-measure", "--json"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["ok"] and summary["phases"] == card["phases"]  # loaded, not retrained
    assert any(line.startswith("  unet: 12 steps") for line in lines)
    assert not (out / "checkpoints").exists()  # dropped after a finished training
    code = main(["pocket-models", "--out", str(out), "--preset", "smoke", "--seed", "3"])
    assert code == 2 and "other settings" in capsys.readouterr().err


def test_scheduler_add_noise_is_the_noising_the_committed_weights_were_trained_with():
    """pocket training noises with diffusers' ``add_noise``; the committed weights were trained
    with √ᾱ_t·z0 + √(1-ᾱ_t)·ε written out: the two agree to the bit at every timestep."""
    from diffusers import DDIMScheduler

    from zodi_core.transfer.models import SD15_SCHEDULER

    scheduler = DDIMScheduler(**SD15_SCHEDULER)
    abar = scheduler.alphas_cumprod.float()
    g = torch.Generator().manual_seed(0)
    t = torch.arange(1000)
    z0, eps = torch.randn(1000, 4, 8, 16, generator=g), torch.randn(1000, 4, 8, 16, generator=g)
    written_out = (
        abar[t].sqrt().view(-1, 1, 1, 1) * z0 + (1 - abar[t]).sqrt().view(-1, 1, 1, 1) * eps
    )
    torch.testing.assert_close(scheduler.add_noise(z0, eps, t), written_out, rtol=0, atol=0)


def _bench(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_layout_ceiling_loss_scales_only_what_the_controlnet_adds(smoke_models, corpus_uri):
    """bench/layout_ceiling.py's held-out loss at each conditioning scale (row 10): a ControlNet
    whose zero convolutions are zero adds nothing, so every scale gives one loss; one that acts
    gives a loss per scale."""
    from zodi_core.pocket.train import _spec_json

    heldout_loss = _bench("layout_ceiling").heldout_loss
    c = load_components(ModelsConfig(base=str(smoke_models[0]), controlnet=None), "cpu")
    held = read_corpus(corpus_uri, "heldout")
    spec = _spec_json(SMOKE)
    with torch.no_grad():
        for conv in [*c.controlnet.controlnet_down_blocks, c.controlnet.controlnet_mid_block]:
            conv.weight.normal_(0, 0.5)
    acting = heldout_loss(c, held, "ade20k", spec, [0.0, 1.0, 2.0])
    assert list(acting) == [0.0, 1.0, 2.0] and len(set(acting.values())) == 3
    with torch.no_grad():
        for conv in [*c.controlnet.controlnet_down_blocks, c.controlnet.controlnet_mid_block]:
            conv.weight.zero_()
            conv.bias.zero_()
    idle = heldout_loss(c, held, "ade20k", spec, [0.0, 1.0, 2.0])
    assert len(set(idle.values())) == 1 and idle[0.0] == acting[0.0]  # scale 0: the UNet alone


def test_speed_bench_times_each_lever_of_each_phase(tmp_path):
    """bench/pocket_speed.py runs a training step of the UNet and ControlNet phase under each
    lever asked for and writes seconds per step; an unknown lever is refused."""
    bench = _bench("pocket_speed")
    out = tmp_path / "speed.json"
    argv = ["--preset", "smoke", "--levers", "eager,bf16", "--warmup", "1", "--steps", "1"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    phases = json.loads(out.read_text())["phases"]
    assert set(phases) == {"unet", "controlnet"}
    for levers in phases.values():
        assert set(levers) == {"eager", "bf16"}
        assert all(r["s_per_step"] > 0 for r in levers.values())
    with pytest.raises(SystemExit):
        bench.main(["--preset", "smoke", "--levers", "fp8"])
    # a wider UNet (and ControlNet): the widths reach the models it builds
    built = []
    real = bench._step_fn
    bench._step_fn = lambda phase, spec, mode: (
        built.append(spec.unet_channels) or real(phase, spec, mode)
    )
    wide = tmp_path / "wide.json"
    argv = ["--preset", "smoke", "--levers", "eager", "--warmup", "1", "--steps", "1"]
    assert bench.main([*argv, "--unet-channels", "96,96", "--json", str(wide)]) == 0
    assert built == [(96, 96), (96, 96)]  # UNet phase, ControlNet phase
    assert "UNet widths (96, 96)" in json.loads(wide.read_text())["machine"]
    with pytest.raises(SystemExit):  # GroupNorm's 8 groups do not divide 36
        bench.main([*argv, "--unet-channels", "36,64"])


def test_fidelity_per_class_table_shows_each_class_for_the_chosen_rows():
    """bench/fidelity.py --per-class: one row per class, a column per real target / ZoDi /
    SDEdit row that was scored per class (others left out), IoU in percent, '-' where absent."""
    from zodi_core.labels import CLASSES

    table = _bench("fidelity")._per_class_table
    iou = np.full(len(CLASSES), np.nan)
    iou[0], iou[13] = 0.5, 0.125
    rows = [
        {"domain": "rain", "method": "real target (reference)", "class_iou": iou},
        {"domain": "rain", "method": "zodi", "class_iou": iou * 2},
        {"domain": "rain", "method": "inst", "class_iou": iou},
        {"domain": "rain", "method": "sdedit"},  # not scored per class
    ]
    lines = table(rows)
    assert lines[0] == "| class (all-looks judge, IoU) | rain: real | rain: zodi |"
    assert lines[2] == "| road | 50 | 100 |" and lines[2 + 13] == "| car | 12 | 25 |"
    assert lines[3] == "| sidewalk | - | - |" and len(lines) == 2 + len(CLASSES) + 1
    assert table([{"domain": "rain", "method": "zodi"}]) == []


def test_fidelity_where_table_shows_where_a_class_pixels_go():
    """bench/fidelity.py --where CLASS: one row per predicted class that takes at least 1% of
    CLASS's pixels in some column, shares in percent; an unknown class is one line, no run."""
    from zodi_core.labels import CLASSES

    bench = _bench("fidelity")
    share = np.zeros(len(CLASSES))
    share[0], share[1], share[8] = 0.6, 0.39, 0.005  # road, sidewalk, vegetation (under 1%)
    rows = [
        {"domain": "rain", "method": "real target (reference)", "where": ("sidewalk", share[::-1])},
        {"domain": "rain", "method": "zodi", "where": ("sidewalk", share)},
        {"domain": "rain", "method": "wo_si", "where": ("sidewalk", share)},  # not tabulated
    ]
    lines = bench._where_table(rows)
    assert (
        lines[0]
        == "| sidewalk pixels predicted as (all-looks judge, %) | rain: real | rain: zodi |"
    )
    assert lines[2:4] == ["| road | 0 | 60 |", "| sidewalk | 0 | 39 |"]
    assert lines[4].startswith("| motorcycle |") and lines[-2].startswith("| bicycle |")
    assert len(lines) == 2 + 4 + 1
    assert bench._where_table([{"domain": "rain", "method": "zodi"}]) == []
    with pytest.raises(SystemExit):
        bench.main(["--where", "kerb"])
