"""What caps the pocket ControlNet's layout mIoU (issue 19): the generations against ceilings.

The model card's layout figure (:func:`zodi_core.pocket.measure.measure_quality`) segments
ControlNet generations from held-out label maps with a small CNN trained on the corpus's clear
scenes, and scores them against those maps. This script trains the same CNN (same seed, steps and
data) and scores, on the same held-out clear scenes:

1. the real scenes (the card's "real held-out" ceiling);
2. their VAE reconstructions (posterior mean): all a generation can be, since it is decoded by
   the same VAE;
3. the real scenes blurred to the latent grid (area down by the VAE's factor, bilinear up): the
   detail a latent pixel's position alone keeps;
4. the label maps themselves through the latent grid (nearest down, nearest up), no network: the
   layout a grid of that size can hold;
5. the ControlNet generations (the card's figure) and the same without ControlNet.

If 2 sits near 5, the VAE, not the ControlNet, is the limit; if 2 is well above 5, the ControlNet
has room to learn. Then, to say where 5 loses against 2:

6. per class, the IoU of 1, 2 and 5 and the fraction of pixels;
7. 5 on all held-out clear maps and on as many training maps, each with two noise seeds: the
   card's figure's noise, and whether the ControlNet learned its training layouts better than new
   ones (over-fitting);
8. 5 at ControlNet conditioning scales above SPEC's 1.0 (a diagnosis, never a setting: ZoDi and
   the card sample at 1.0): if a larger scale lifts the layout, the ControlNet's residuals point
   the right way but it commits to them too little;
9. 1, 2 and 5 scored on the classes the condition can tell apart: SPEC §2's ADE20K map draws
   train as bus and rider as person, so no ControlNet can know which of the two to draw (maps are
   drawn in the palette the models' ControlNet was trained on; Cityscapes': nothing merged);
10. the training loss (the ControlNet phase's: Min-SNR-weighted ε-MSE, its caption dropout and
    noise) on the held-out scenes of every look, at each conditioning scale: if it is lowest at
    1.0, the ControlNet sits at its loss's optimum, and what a larger scale gains in 8 is
    guidance (sharpening a hedged prediction), not an under-trained ControlNet. ``--vae-steps S ...`` also trains the preset's VAE from scratch for S steps
(through :func:`zodi_core.pocket.train.train_pocket`, same seed and batches: the committed VAE is
its first 1000 steps) and scores its reconstructions and PSNR: how far a longer VAE phase lifts 2.

    OMP_NUM_THREADS=1 python bench/layout_ceiling.py --out /tmp/ceiling [--models DIR]
                                                     [--vae-steps 3000] [--scales 1.5 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def heldout_loss(c, heldout, palette: str, spec: dict, scales: list[float]) -> dict:
    """10.: the ControlNet phase's loss on every held-out scene (one draw of t, noise and caption
    dropout, seed 0) with the ControlNet's residuals times each of ``scales``."""
    import numpy as np
    import torch
    from diffusers.training_utils import compute_snr

    from zodi_core.conditions import render_condition
    from zodi_core.pocket.train import training_noise

    g = torch.Generator().manual_seed(0)
    x = torch.from_numpy(heldout.images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    maps = np.stack([render_condition(lab, palette) for lab in heldout.labels])
    cond = torch.from_numpy(maps).permute(0, 3, 1, 2).float() / 255.0
    n = len(x)
    dropped = torch.rand(n, generator=g) < spec["controlnet_caption_dropout"]
    captions = ["" if d else cap for d, cap in zip(dropped, heldout.captions, strict=True)]
    with torch.inference_mode():
        post = c.vae.encode(x).latent_dist
        z0 = (post.mean + post.std * torch.randn(post.mean.shape, generator=g)) * float(
            c.vae.config.scaling_factor
        )
        ids = c.tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                          return_tensors="pt").input_ids  # fmt: skip
        emb = c.text_encoder(ids)[0]
        t = torch.randint(0, 1000, (n,), generator=g)
        eps = training_noise(z0.shape, g, spec["noise_offset"])
        z_t = c.scheduler.add_noise(z0, eps, t)
        snr = compute_snr(c.scheduler, t)
        weight = (snr.clamp(max=spec["snr_gamma"]) + 1) / snr
        losses = {}
        for k in scales:
            per = []
            for i in range(0, n, 48):
                b = slice(i, i + 48)
                down, mid = c.controlnet(z_t[b], t[b], encoder_hidden_states=emb[b],
                                         controlnet_cond=cond[b], conditioning_scale=k,
                                         return_dict=False)  # fmt: skip
                pred = c.unet(z_t[b], t[b], encoder_hidden_states=emb[b],
                              down_block_additional_residuals=down,
                              mid_block_additional_residual=mid).sample  # fmt: skip
                per.append(((pred - eps[b]) ** 2).mean(dim=(1, 2, 3)))
            losses[k] = round(float((torch.cat(per) * weight).mean()), 4)
    return losses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="a pocket models folder (default: the committed weights)")
    ap.add_argument("--out", required=True, help="work folder (the corpus)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vae-steps", type=int, nargs="*", default=[],
                    help="also train the VAE from scratch for these steps and score it")  # fmt: skip
    ap.add_argument("--scales", type=float, nargs="*", default=[1.5, 2.0],
                    help="ControlNet conditioning scales to diagnose with (SPEC's is 1.0)")  # fmt: skip
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from dataclasses import replace

    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL

    from zodi_core.conditions import palette_colors, render_condition
    from zodi_core.config import ModelsConfig
    from zodi_core.labels import CLASSES, NUM_CLASSES
    from zodi_core.metrics import confusion_matrix, iou_metrics, mean_iou
    from zodi_core.pocket import pocket_models_dir
    from zodi_core.pocket.corpus import caption_for, read_corpus, write_corpus
    from zodi_core.pocket.measure import generate, predict, train_classifier, vae_psnr
    from zodi_core.pocket.train import PRESETS, stored_spec, train_pocket
    from zodi_core.transfer.models import load_components

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    base = Path(args.models) if args.models else pocket_models_dir()
    spec = PRESETS["full"]
    manifest = Path(args.out) / "corpus" / "webcorpus.parquet"
    if not manifest.is_file():
        write_corpus(manifest.parent, seed=spec.seed, size=(spec.width, spec.height),
                     n_per_domain=spec.n_per_domain, n_heldout=spec.n_heldout)  # fmt: skip
    train, heldout = (read_corpus(str(manifest), split) for split in ("train", "heldout"))
    c = load_components(ModelsConfig(base=str(base), controlnet=None), "cpu")
    trained = json.loads((base / "training_state.json").read_text())
    palette = stored_spec(trained["spec"])["controlnet_palette"]  # the maps it learned
    factor = 2 ** (len(c.vae.config.block_out_channels) - 1)

    # the card's segmentation net and held-out set (measure_quality's defaults: seed 0, 8 per
    # prompt, classifier_steps 150)
    seed, n_per_prompt, classifier_steps = 0, 8, 150
    clear = np.array([d == "clear" for d in train.domains])
    seg = train_classifier(
        train.images[clear], train.labels[clear], dense=True, steps=classifier_steps * 2, seed=seed
    )
    held_clear = np.array([d == "clear" for d in heldout.domains])
    labels = heldout.labels[held_clear][: n_per_prompt * 2]
    images = heldout.images[held_clear][: len(labels)]
    h, w = labels.shape[1:]

    def to_uint8(x):
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def reconstruct(vae):
        with torch.inference_mode():
            return to_uint8(vae.decode(vae.encode(x).latent_dist.mean).sample)

    recon = reconstruct(c.vae)
    with torch.inference_mode():
        grid = F.interpolate(F.avg_pool2d(x, factor), size=(h, w), mode="bilinear")
        blurred = to_uint8(grid)
        small = torch.from_numpy(labels.astype(np.int64))[:, None].float()
        small = F.interpolate(F.interpolate(small, scale_factor=1 / factor, mode="nearest"),
                              size=(h, w), mode="nearest")  # fmt: skip
    labels_on_grid = small[:, 0].numpy().astype(labels.dtype)
    conds = np.stack([render_condition(lab, palette) for lab in labels])
    caps = [caption_for("clear")] * len(labels)
    with_cn = generate(c, caps, seed=seed + 1000, conditions=conds, height=h, width=w)
    without = generate(c, caps, seed=seed + 1000, conditions=None, height=h, width=w)

    def score(pred_images):
        return round(mean_iou(predict(seg, pred_images), labels), 1)

    rows = {
        "real held-out scenes": score(images),
        "their VAE reconstructions": score(recon),
        f"real scenes blurred to the latent grid (1/{factor})": score(blurred),
        f"label maps through the latent grid (1/{factor}, no network)": round(
            mean_iou(labels_on_grid, labels), 1
        ),
        "ControlNet generations (the card's figure)": score(with_cn),
        "the same without ControlNet": score(without),
    }
    # 6. per class
    per_class = {}
    for name, imgs in (("real", images), ("reconstruction", recon), ("generation", with_cn)):
        per_class[name] = iou_metrics(confusion_matrix(predict(seg, imgs), labels))["IoU"]
    share = np.bincount(labels.ravel(), minlength=256)[: len(CLASSES)] / labels.size
    # 9. classes of one condition colour merged (into the first of them)
    colors = palette_colors(palette)[:NUM_CLASSES]
    same = np.arange(256)
    same[:NUM_CLASSES] = [np.flatnonzero((colors == col).all(axis=1))[0] for col in colors]
    merged_names = [
        f"{CLASSES[i]}→{CLASSES[j]}" for i, j in enumerate(same[:NUM_CLASSES]) if i != j
    ]
    merged = {
        name: round(mean_iou(same[predict(seg, imgs)], same[labels]), 1)
        for name, imgs in (("real", images), ("reconstruction", recon), ("generation", with_cn))
    }
    # 7. noise and over-fitting; 8. conditioning scale
    train_labels = train.labels[clear]
    all_held = heldout.labels[held_clear]
    spread = {}
    for name, maps in (("held-out", all_held), ("training", train_labels[: len(all_held)])):
        maps_rgb = np.stack([render_condition(lab, palette) for lab in maps])
        spread[name] = [
            round(mean_iou(predict(seg, generate(c, [caps[0]] * len(maps), seed=seed + s,
                  conditions=maps_rgb, height=h, width=w)), maps), 1)
            for s in (1000, 2000)
        ]  # fmt: skip
    scales = {1.0: rows["ControlNet generations (the card's figure)"]}
    for k in args.scales:
        scales[k] = score(generate(c, caps, seed=seed + 1000, conditions=conds, height=h, width=w,
                                   control_scale=k))  # fmt: skip
    losses = heldout_loss(c, heldout, palette, stored_spec(trained["spec"]),
                          sorted({0.0, 0.8, 1.0, 1.2, *args.scales}))  # fmt: skip
    committed = trained["phases"]["vae"]["steps"]
    vaes = {committed: {"recon_miou": rows["their VAE reconstructions"],
                          "psnr_db": round(vae_psnr(c.vae, heldout.images), 2)}}  # fmt: skip
    for n in args.vae_steps:  # the preset's VAE phase alone, longer
        folder = Path(args.out) / f"vae{n}"
        train_pocket(train, folder, replace(spec, vae_steps=n, unet_steps=0, controlnet_steps=0),
                     threads=args.threads)  # fmt: skip
        vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
        vaes[n] = {"recon_miou": score(reconstruct(vae)),
                   "psnr_db": round(vae_psnr(vae, heldout.images), 2)}  # fmt: skip
    print(f"| what ({len(labels)} held-out clear scenes, {w}x{h}) | layout mIoU |")
    print("|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value} |")
    print("\n| VAE steps | layout mIoU of its reconstructions | PSNR dB (all held-out) |")
    print("|---|---|---|")
    for n, v in sorted(vaes.items()):
        print(f"| {n} | {v['recon_miou']} | {v['psnr_db']} |")
    print("\n| class | pixels | real | VAE reconstruction | ControlNet generation |")
    print("|---|---|---|---|---|")
    for i, name in enumerate(CLASSES):
        if share[i] > 0:
            iou = [per_class[k][i] for k in ("real", "reconstruction", "generation")]
            print(f"| {name} | {100 * share[i]:.1f}% | " + " | ".join(
                "-" if np.isnan(v) else f"{100 * v:.0f}" for v in iou) + " |")  # fmt: skip
    print(f"\n| ControlNet generations from | maps | noise seed {seed + 1000} | {seed + 2000} |")
    print("|---|---|---|---|")
    for name, (a, b) in spread.items():
        print(f"| {name} clear label maps | {len(all_held)} | {a} | {b} |")
    what = ", ".join(merged_names) or "nothing merged"
    print(
        f"\n| layout mIoU, scored with {what} | real | VAE reconstruction | ControlNet generation |"
    )
    print("|---|---|---|---|")
    print(
        f"| {len(labels)} held-out clear scenes | " + " | ".join(map(str, merged.values())) + " |"
    )
    print("\n| ControlNet conditioning scale (diagnosis; SPEC: 1.0) | layout mIoU |")
    print("|---|---|")
    for k, v in scales.items():
        print(f"| {k} | {v} |")
    print(f"\n| conditioning scale | training loss, {len(heldout)} held-out scenes of every look |")
    print("|---|---|")
    for k, v in losses.items():
        print(f"| {k} | {v} |")
    seconds = round(time.perf_counter() - t0, 1)
    print(f"\nModels {base}; torch threads {args.threads}, {torch.__version__}; {seconds} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "vaes": vaes,
                    "spread": spread,
                    "scales": scales,
                    "losses": losses,
                    "merged": {"classes": merged_names, **merged},
                    "per_class": {
                        k: [None if np.isnan(v) else round(float(v), 3) for v in per]
                        for k, per in per_class.items()
                    },
                    "seconds": seconds,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
