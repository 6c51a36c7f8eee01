"""Measured quality of the pocket models, on the corpus's held-out split.

- VAE: reconstruction PSNR (dB) of held-out images.
- Text conditioning: a small CNN look classifier's accuracy on generations from each look's
  caption (chance 1/6), beside its accuracy on held-out real images (the ceiling).
- Layout following: mIoU of a small segmentation CNN on ControlNet generations from held-out
  label maps, beside real scenes (ceiling) and the same prompts/noise without ControlNet (chance).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from zodi_core.conditions import render_condition
from zodi_core.labels import IGNORE_INDEX, NUM_CLASSES
from zodi_core.metrics import mean_iou
from zodi_core.pocket.corpus import CORPUS_DOMAINS, Corpus, caption_for


def _to_tensor(images: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _to_uint8(x: Any) -> np.ndarray:
    import torch

    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).cpu().numpy()


def _in_chunks(fn: Any, images: np.ndarray) -> np.ndarray:
    """``fn`` over (N, H, W, 3) uint8 ``images`` as [-1, 1] tensors, 32 at a time, no grad."""
    import torch

    with torch.inference_mode():
        return np.concatenate(
            [fn(_to_tensor(images[i : i + 32])) for i in range(0, len(images), 32)]
        )


def vae_psnr(vae: Any, images: np.ndarray) -> float:
    """Reconstruct through the posterior mean; PSNR (dB) against the input, over all pixels."""
    out = _in_chunks(lambda x: _to_uint8(vae.decode(vae.encode(x).latent_dist.mean).sample), images)
    mse = float(np.mean((out.astype(np.float64) - images.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def generate(
    c: Any,
    captions: Sequence[str],
    seed: int,
    conditions: np.ndarray | None = None,
    *,
    steps: int = 20,
    guidance: float = 3.0,
    height: int = 64,
    width: int = 128,
    control_scale: float = 1.0,
) -> np.ndarray:
    """(N, H, W, 3) uint8 images for ``captions`` from components ``c`` (``conditions``: (N, H, W,
    3) uint8 ControlNet maps, or None): DDIM (eta 0, CFG with the empty caption) by diffusers' SD
    (ControlNet) pipelines, independent of the ZoDi sampler. ``control_scale``: the pipeline's
    ``controlnet_conditioning_scale`` (the card and ZoDi: 1.0; other values only diagnose)."""
    import copy

    import torch
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

    parts = dict(
        vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet,
        scheduler=copy.deepcopy(c.scheduler), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    extra: dict[str, Any] = {}
    if conditions is None:
        pipe = StableDiffusionPipeline(**parts)
    else:
        pipe = StableDiffusionControlNetPipeline(**parts, controlnet=c.controlnet)
        extra["image"] = torch.from_numpy(conditions).permute(0, 3, 1, 2).float() / 255.0
        extra["controlnet_conditioning_scale"] = control_scale
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        list(captions), height=height, width=width, num_inference_steps=steps,
        guidance_scale=guidance, negative_prompt=None, eta=0.0,
        generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **extra,
    ).images  # fmt: skip
    return (images * 255).round().astype(np.uint8)


def train_classifier(
    images: np.ndarray, targets: np.ndarray, dense: bool, steps: int, seed: int
) -> Any:
    """A small CNN: image → domain (``dense=False``) or per-pixel train id (``dense=True``)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def block(i: int, o: int, stride: int) -> list[Any]:
        return [nn.Conv2d(i, o, 3, stride, 1), nn.GroupNorm(8, o), nn.SiLU()]

    torch.manual_seed(seed)
    # Stride 2 first: cheap enough to train in a minute on one CPU core at 64x128.
    layers = [*block(3, 24, 2), *block(24, 32, 1), *block(32, 48, 2), *block(48, 48, 1)]
    layers += [*block(48, 48, 1), nn.Conv2d(48, NUM_CLASSES if dense else len(CORPUS_DOMAINS), 1)]
    net = nn.Sequential(*layers)
    if dense:
        net = nn.Sequential(net, nn.Upsample(scale_factor=4, mode="bilinear"))
    else:
        net = nn.Sequential(net, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    x_all, y_all = _to_tensor(images), torch.from_numpy(targets.astype(np.int64))
    g = torch.Generator("cpu").manual_seed(seed)
    for _ in range(steps):  # a new module trains; no batch norm or dropout either way
        idx = torch.randint(len(images), (8,), generator=g)
        loss = F.cross_entropy(net(x_all[idx]), y_all[idx], ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def predict(net: Any, images: np.ndarray) -> np.ndarray:
    return _in_chunks(lambda x: net(x).argmax(1).numpy(), images)


def measure_quality(
    components: Any,
    train: Corpus,
    heldout: Corpus,
    *,
    seed: int = 0,
    n_per_prompt: int = 8,
    steps: int = 20,
    guidance: float = 3.0,
    classifier_steps: int = 150,
    palette: str = "ade20k",
) -> dict[str, Any]:
    """All three measurements; a JSON-able dict (numbers rounded). ``palette``: of the condition
    maps, the one the ControlNet was trained on."""
    out: dict[str, Any] = {"sampling": {"steps": steps, "guidance": guidance, "eta": 0.0}}
    out["vae_psnr_db"] = round(vae_psnr(components.vae, heldout.images), 2)

    dom_idx = np.array([CORPUS_DOMAINS.index(d) for d in train.domains])
    clf = train_classifier(train.images, dom_idx, dense=False, steps=classifier_steps, seed=seed)
    held_idx = np.array([CORPUS_DOMAINS.index(d) for d in heldout.domains])
    real_acc = float(np.mean(predict(clf, heldout.images) == held_idx))
    gen = functools.partial(generate, components, steps=steps, guidance=guidance)
    per_domain = {}
    for i, domain in enumerate(CORPUS_DOMAINS):
        imgs = gen([caption_for(domain)] * n_per_prompt, seed=seed + 17 * i)
        per_domain[domain] = round(float(np.mean(predict(clf, imgs) == i)), 3)
    out["text_conditioning"] = {
        "classifier_accuracy_real_heldout": round(real_acc, 3),
        "classifier_accuracy_generated": per_domain,
        "mean_accuracy_generated": round(float(np.mean(list(per_domain.values()))), 3),
        "chance": round(1 / len(CORPUS_DOMAINS), 3),
        "images_per_prompt": n_per_prompt,
    }

    clear = np.array([d == "clear" for d in train.domains])
    seg = train_classifier(
        train.images[clear], train.labels[clear], dense=True, steps=classifier_steps * 2, seed=seed
    )
    held_clear = np.array([d == "clear" for d in heldout.domains])
    labels = heldout.labels[held_clear][: max(n_per_prompt, 1) * 2]
    images = heldout.images[held_clear][: len(labels)]
    conds = np.stack([render_condition(lab, palette) for lab in labels])
    caps = [caption_for("clear")] * len(labels)
    with_cn = gen(caps, seed=seed + 1000, conditions=conds)
    without = gen(caps, seed=seed + 1000, conditions=None)
    out["layout_following"] = {
        "miou_real_heldout": round(mean_iou(predict(seg, images), labels), 1),
        "miou_controlnet_generations": round(mean_iou(predict(seg, with_cn), labels), 1),
        "miou_without_controlnet": round(mean_iou(predict(seg, without), labels), 1),
        "images": len(labels),
    }
    out["_samples"] = np.vstack(np.concatenate([conds[:4], with_cn[:4]], axis=2))  # map | image
    return out
