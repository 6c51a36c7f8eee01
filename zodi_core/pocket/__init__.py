"""Pocket models: small diffusion models trained by the project on its synthetic world.

SD 1.5 + ControlNet v1.1 cannot reach this machine; these have the same diffusers component
classes, are trained with the same recipes on a captioned synthetic "web corpus" (disjoint from
source and target sets) and load through :func:`zodi_core.transfer.models.load_components`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from zodi_core.config import ModelsConfig
from zodi_core.datasets.io import encode_png
from zodi_core.device import resolve_device
from zodi_core.pocket.corpus import CORPUS_DOMAINS, caption_for, read_corpus, write_corpus
from zodi_core.pocket.measure import measure_quality
from zodi_core.pocket.train import PRESETS, PocketSpec, train_pocket
from zodi_core.transfer.models import load_components

#: The committed pocket models (their card: ``weights/MODEL_CARD.md``, docs/fidelity.md §1).
WEIGHTS_DIR = Path(__file__).parent / "weights"


def is_pocket_models(folder: str | Path) -> bool:
    """Whether ``folder`` holds pocket models (``zodi pocket-models`` writes a model card)."""
    return all((Path(folder) / name).is_file() for name in ("model_index.json", "MODEL_CARD.md"))


def pocket_models_dir() -> Path:
    """The committed pocket models' folder (pass it as ``--models``)."""
    if not is_pocket_models(WEIGHTS_DIR):
        raise FileNotFoundError(
            f"pocket models: no weights at {WEIGHTS_DIR}; train them with "
            "`zodi pocket-models --out DIR` and pass --models DIR"
        )
    return WEIGHTS_DIR


def build_pocket_models(
    out_dir: str | Path,
    *,
    preset: str = "full",
    seed: int | None = None,
    threads: int | None = None,
    measure: bool = True,
    keep_checkpoints: bool = False,
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write the corpus (once), train (resuming; ``checkpoints/`` dropped once done unless
    ``keep_checkpoints``), reload through ``load_components``, measure quality, write the model
    card; return the card's dict."""
    import torch

    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, received {preset!r}")
    resolve_device(device, auto_half=False)  # a bad --device fails before the corpus is written
    spec: PocketSpec = PRESETS[preset]
    if seed is not None:
        spec = replace(spec, seed=seed)
    out = Path(out_dir)
    t0 = time.perf_counter()
    corpus_dir = out / "corpus"
    manifest_uri = corpus_dir / "webcorpus.parquet"
    if not manifest_uri.is_file():
        print(f"writing the web corpus: {spec.n_per_domain} scenes a look", file=sys.stderr)
        write_corpus(
            corpus_dir,
            seed=spec.seed,
            size=(spec.width, spec.height),
            n_per_domain=spec.n_per_domain,
            n_heldout=spec.n_heldout,
        )
    train = read_corpus(str(manifest_uri), "train")
    t_corpus = time.perf_counter() - t0
    phases = train_pocket(train, out, spec, threads=threads, progress=progress, device=device)
    t_train = time.perf_counter() - t0 - t_corpus
    if not keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)

    components = load_components(ModelsConfig(base=str(out), controlnet=None), "cpu")
    card: dict[str, Any] = {
        "command": f"zodi pocket-models --out DIR --preset {preset} --seed {spec.seed} --threads "
        f"{torch.get_num_threads()}" + ("" if device == "cpu" else f" --device {device}"),
        "preset": preset,
        "spec": asdict(spec),
        "data": {
            "manifest": "corpus/webcorpus.parquet",
            "train_images": len(train),
            "looks": list(CORPUS_DOMAINS),
            "captions": {d: caption_for(d) for d in CORPUS_DOMAINS},
            "size": f"{spec.width}x{spec.height}",
            "disjoint_from": "synth.write_synthetic streams 0-1, 10-13, 20 (corpus: 100, 101)",
        },
        "phases": phases,
        "seconds": {"corpus": round(t_corpus, 1), "training_this_run": round(t_train, 1)},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"visible, torch threads {torch.get_num_threads()}, "
        + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "torch": torch.__version__,
        "revisions": components.revisions,
    }
    if measure:
        t1 = time.perf_counter()
        heldout = read_corpus(str(manifest_uri), "heldout")
        small = {"n_per_prompt": 2, "steps": 2, "classifier_steps": 3} if preset == "smoke" else {}
        quality = measure_quality(
            components, train, heldout, seed=spec.seed, palette=spec.controlnet_palette, **small
        )
        (out / "samples.png").write_bytes(encode_png(quality.pop("_samples")))
        card["quality"] = quality
        card["seconds"]["measurement"] = round(time.perf_counter() - t1, 1)
    card["seconds"]["total_this_run"] = round(time.perf_counter() - t0, 1)
    (out / "card.json").write_text(json.dumps(card, indent=2))
    (out / "MODEL_CARD.md").write_text(render_card(card))
    return card


def render_card(card: dict[str, Any]) -> str:
    """The model card as Markdown."""
    lines = [
        "# Pocket models (ZoDi project)",
        "",
        "Small diffusion models with Stable Diffusion 1.5 + ControlNet v1.1's component classes,",
        "trained by `zodi pocket-models` on the project's synthetic web corpus. Not SD 1.5: a",
        "miniature in which ZoDi's claims can be measured on a CPU.",
        "",
        f"- reproduce: `{card['command']}`",
        f"- preset `{card['preset']}`, seed {card['spec']['seed']}, size {card['data']['size']}",
        f"- data: {card['data']['train_images']} training scenes "
        f"({', '.join(card['data']['looks'])}), {card['data']['disjoint_from']}",
        f"- machine: {card['machine']}; torch {card['torch']}",
        "",
        "| phase | steps | loss (first 50) | loss (last 50) | seconds |",
        "|---|---|---|---|---|",
    ]
    for phase, p in card["phases"].items():
        lines.append(
            f"| {phase} | {p['steps']} | {p['loss_first']:.4f} | {p['loss_last']:.4f} | "
            f"{p['seconds']} |"
        )
    if q := card.get("quality"):
        tc, lf = q["text_conditioning"], q["layout_following"]
        gen = ", ".join(f"{d} {a:.2f}" for d, a in tc["classifier_accuracy_generated"].items())
        lines += [
            "",
            "## Measured quality (held-out corpus split)",
            "",
            f"- VAE reconstruction PSNR: {q['vae_psnr_db']} dB",
            f"- text conditioning: domain classifier accuracy on real held-out images "
            f"{tc['classifier_accuracy_real_heldout']:.2f}; on {tc['images_per_prompt']} "
            f"generations per prompt: {gen} (mean {tc['mean_accuracy_generated']:.2f}, "
            f"chance {tc['chance']:.2f})",
            f"- layout following: segmentation mIoU on real held-out scenes "
            f"{lf['miou_real_heldout']}, on ControlNet generations {lf['miou_controlnet_generations']},"
            f" on the same generations without ControlNet {lf['miou_without_controlnet']} "
            f"({lf['images']} label maps)",
            f"- sampling: DDIM {q['sampling']['steps']} steps, eta 0, CFG {q['sampling']['guidance']}",
        ]
    lines += ["", f"Seconds: {json.dumps(card['seconds'])}", ""]
    return "\n".join(lines)
