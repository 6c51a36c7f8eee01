"""ZoDi's image transfer in miniature, on the pocket models: do the methods keep the layout and
reach the target look?

For synthetic Cityscapes-like source images (``write_synthetic``'s val split) and each target
domain, every method of paper Table 2 (zodi, sdedit, inst, wo_si) transfers the images through
the project's own sampler (``TransferSampler``, ``default`` preset at 64x128) with the pocket
models. Measured on the generated images:

- target look: the share a domain classifier (trained on the web corpus) assigns to the target
  domain (real ACDC-like target images give the ceiling);
- layout preservation: mIoU against the *source* labels of (a) a source-only segmentation net
  trained on clear-look scenes (the paper's column: what a source-only model sees) and (b) an
  all-looks net trained on every look of the corpus (layout, free of the domain gap).

Not yet here: the adaptation experiments of issue 11 §2 (Table 1, w/o L_sim, proxy correlation),
which need the flows' segmentation training.

    OMP_NUM_THREADS=1 python bench/fidelity.py --quick            # night only, 8 images
    OMP_NUM_THREADS=1 python bench/fidelity.py --n 24 --write docs/fidelity.md
    OMP_NUM_THREADS=1 python bench/fidelity.py --n 16 --grid DIR   # + one image grid per domain
    OMP_NUM_THREADS=1 python bench/fidelity.py --n 16 --domains game --vae-ceiling --per-class
    OMP_NUM_THREADS=1 python bench/fidelity.py --n 16 --guidance 3        # CFG's share of the loss
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("zodi", "wo_si", "sdedit", "inst")


def _read_pairs(root: Path, pattern: str, label_of) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from zodi_core.datasets.io import read_image, read_label

    images, labels, ids = [], [], []
    for p in sorted(root.rglob(pattern)):
        lab_path, fmt = label_of(p)
        images.append(read_image(str(p)))
        labels.append(read_label(str(lab_path), fmt))
        ids.append(p.stem)
    return np.stack(images), np.stack(labels), ids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="pocket models folder (default: the committed weights)")
    ap.add_argument("--quick", action="store_true", help="night only, 8 images (CI)")
    ap.add_argument("--domains", default="night,snow,rain,fog,game")
    ap.add_argument("--n", type=int, default=24, help="source images")
    ap.add_argument("--steps", type=int, default=20, help="T, DDIM steps of the full schedule")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--negative-prompt", default="",
        help="CFG negative prompt (default empty: the pocket models learned the empty caption as "
        "the unconditional branch; their corpus has no 'worst quality' images)",
    )  # fmt: skip
    ap.add_argument("--guidance", type=float, help="CFG scale (default: the preset's, 9.0)")
    ap.add_argument("--write", help="also write the Markdown report to this file")
    ap.add_argument(
        "--grid", help="folder: write <domain>.png, rows of source | condition map | ZoDi's image"
    )
    ap.add_argument(
        "--per-class", action="store_true",
        help="also print each class's IoU by the all-looks judge (real target, ZoDi, SDEdit)",
    )  # fmt: skip
    ap.add_argument(
        "--where", metavar="CLASS",
        help="also print what the all-looks judge predicts on the pixels labelled CLASS (share "
        "per predicted class; real target, ZoDi, SDEdit), e.g. sidewalk",
    )  # fmt: skip
    ap.add_argument(
        "--vae-ceiling", action="store_true",
        help="also score the real targets after a round trip through the pocket VAE: what the "
        "latent can hold of the domain's layout, a ceiling for every method",
    )  # fmt: skip
    ap.add_argument(
        "--controlnet-caption", choices=("branch", "prompt"), default="branch",
        help="what the ControlNet reads in CFG's two branches: each branch's own caption "
        "(branch, SPEC's method) or the target prompt in both (prompt: a diagnosis of how much "
        "CFG multiplies the ControlNet's residual's dependence on the caption)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    from zodi_core.labels import CLASSES

    if args.where is not None and args.where not in CLASSES:
        ap.error(f"--where: {args.where!r} is not a class; one of: {', '.join(CLASSES)}")
    import torch

    from zodi_core.config import ModelsConfig, TransferConfig
    from zodi_core.datasets.synth import write_synthetic
    from zodi_core.metrics import confusion_matrix, iou_metrics, mean_iou
    from zodi_core.pocket import pocket_models_dir
    from zodi_core.pocket.corpus import CORPUS_DOMAINS, read_corpus, write_corpus
    from zodi_core.pocket.measure import predict, train_classifier
    from zodi_core.transfer.models import load_components
    from zodi_core.transfer.sampler import TransferSampler

    domains = ["night"] if args.quick else args.domains.split(",")
    n = 8 if args.quick else args.n
    t0 = time.perf_counter()
    models = Path(args.models) if args.models else pocket_models_dir()
    comps = load_components(ModelsConfig(base=str(models), controlnet=None), "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="zodi-fidelity-"))
    roots = write_synthetic(
        tmp / "data", seed=args.seed, size=(128, 64), n_train=0, n_val=n, n_target=n, n_gta=n
    )
    src_x, src_y, src_ids = _read_pairs(
        Path(roots["cityscapes"]) / "leftImg8bit" / "val",
        "*_leftImg8bit.png",
        lambda p: (
            Path(str(p).replace("leftImg8bit", "gtFine", 1)).with_name(
                p.name.replace("leftImg8bit.png", "gtFine_labelIds.png")
            ),
            "label_ids",
        ),
    )

    def target_set(domain: str) -> tuple[np.ndarray, np.ndarray]:
        if domain == "game":
            x, y, _ = _read_pairs(
                Path(roots["gta5"]) / "images", "*.png",
                lambda p: (p.parent.parent / "labels" / p.name, "label_ids"),
            )  # fmt: skip
            return x, y
        x, y, _ = _read_pairs(
            Path(roots["acdc"]) / "rgb_anon" / domain, "*_rgb_anon.png",
            lambda p: (
                Path(str(p).replace("rgb_anon", "gt", 1)).with_name(
                    p.name.replace("rgb_anon.png", "gt_labelTrainIds.png")
                ),
                "train_ids",
            ),
        )  # fmt: skip
        return x, y

    # Judges, trained on a corpus of their own (another seed than the pocket models').
    corpus_uri = write_corpus(tmp / "corpus", seed=args.seed + 1000, n_per_domain=40, n_heldout=1)
    corpus = read_corpus(corpus_uri, "train")
    dom_idx = np.array([CORPUS_DOMAINS.index(d) for d in corpus.domains])
    clf = train_classifier(corpus.images, dom_idx, dense=False, steps=150, seed=args.seed)
    clear = np.array([d == "clear" for d in corpus.domains])
    seg_src = train_classifier(
        corpus.images[clear], corpus.labels[clear], dense=True, steps=300, seed=args.seed
    )
    seg_all = train_classifier(corpus.images, corpus.labels, dense=True, steps=300, seed=args.seed)
    t_judges = time.perf_counter() - t0

    def judge(x: np.ndarray, y: np.ndarray, domain: str) -> dict[str, float]:
        all_looks = predict(seg_all, x)
        out = {
            "target_look": float(np.mean(predict(clf, x) == CORPUS_DOMAINS.index(domain))),
            "miou_source_only": mean_iou(predict(seg_src, x), y),
            "miou_all_looks": mean_iou(all_looks, y),
        }
        if args.per_class or args.where:
            cm = confusion_matrix(all_looks, y)
            out["class_iou"] = iou_metrics(cm)["IoU"]
            if args.where:
                row = cm[CLASSES.index(args.where)]
                out["where"] = (args.where, row / max(int(row.sum()), 1))
        return out

    rows = []
    for domain in domains:
        tx, ty = target_set(domain)
        rows.append(
            {"domain": domain, "method": "real target (reference)", **judge(tx, ty, domain)}
        )
        rows.append({"domain": domain, "method": "source image (no transfer)", **judge(src_x, src_y, domain)})  # fmt: skip
        if args.vae_ceiling:
            rows.append({"domain": domain, "method": VAE_CEILING, **judge(vae_round_trip(comps, tx), ty, domain)})  # fmt: skip
        for method in METHODS:
            cfg = TransferConfig.preset(
                "default", domain=domain, method=method, short_side=64, size_multiple=64,
                num_inference_steps=args.steps, device="cpu", batch_size=8, seed=args.seed,
                negative_prompt=args.negative_prompt,
                **({"guidance_scale": args.guidance} if args.guidance is not None else {}),
            )  # fmt: skip
            t1 = time.perf_counter()
            sampler = TransferSampler(comps, cfg)
            if args.controlnet_caption == "prompt":
                sampler.controlnet = PromptCaptionControlNet(sampler.controlnet)
            with torch.inference_mode():
                outs = sampler(list(src_x), list(src_y), src_ids)
            gen = np.stack([o.image for o in outs])
            if args.grid and method == "zodi":
                _write_grid(Path(args.grid) / f"{domain}.png", src_x[:4], src_y[:4], gen[:4])
            row = {"domain": domain, "method": method, **judge(gen, src_y, domain)}
            row["seconds_per_image"] = (time.perf_counter() - t1) / len(gen)
            rows.append(row)
            print(_fmt_row(row), file=sys.stderr, flush=True)
    argv_used = sys.argv[1:] if argv is None else argv
    report = _markdown(rows, args, argv_used, n, models, time.perf_counter() - t0, t_judges)
    print(report)
    if args.write:
        Path(args.write).write_text(report)
    return 0


class PromptCaptionControlNet:
    """``--controlnet-caption prompt`` (a diagnosis, not the method): the ControlNet reads the
    target prompt in both CFG branches while the UNet reads each branch's own caption, so the
    ControlNet's residual is the same in both and CFG (uncond + w (cond - uncond)) adds it once,
    where SPEC's method adds ``w C(prompt) - (w - 1) C(empty)``. The sampler stacks the branches
    [negative, positive] and the inversion step passes the prompt alone, so the batch's last
    caption is the prompt in every call."""

    def __init__(self, controlnet) -> None:
        self.inner = controlnet

    def __call__(self, x, t, *, encoder_hidden_states, **kwargs):
        prompt = encoder_hidden_states[-1:].expand_as(encoder_hidden_states)
        return self.inner(x, t, encoder_hidden_states=prompt, **kwargs)


def vae_round_trip(components, images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB through the models' VAE, encoder then decoder (the sampler's own
    ``encode``/``decode``, on the CPU): what the latent keeps of the images."""
    import torch

    from zodi_core.config import TransferConfig
    from zodi_core.transfer.sampler import TransferSampler

    cfg = TransferConfig.preset("default", device="cpu", short_side=64, size_multiple=64)
    sampler = TransferSampler(components, cfg)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        y = sampler.decode(sampler.encode(x))
    return ((y + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def _write_grid(path: Path, images, labels, generated) -> None:
    from zodi_core.conditions import render_condition
    from zodi_core.datasets.io import encode_png

    rows = [
        np.concatenate([x, render_condition(y, "ade20k"), g], axis=1)
        for x, y, g in zip(images, labels, generated, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.concatenate(rows)))


def _fmt_row(r: dict) -> str:
    sec = f"{r['seconds_per_image']:.2f}" if "seconds_per_image" in r else "-"
    return (
        f"| {r['domain']} | {r['method']} | {100 * r['target_look']:.0f}% | "
        f"{r['miou_source_only']:.1f} | {r['miou_all_looks']:.1f} | {sec} |"
    )


def _per_class_table(rows) -> list[str]:
    """IoU (percent) per class by the all-looks judge, for the rows ``--per-class`` scored."""
    from zodi_core.labels import CLASSES

    shown = [r for r in rows if "class_iou" in r and r["method"] in PER_CLASS_METHODS]
    if not shown:
        return []
    head = [f"{r['domain']}: {_SHORT.get(r['method'], r['method'])}" for r in shown]
    lines = ["| class (all-looks judge, IoU) | " + " | ".join(head) + " |",
             "|---" * (len(shown) + 1) + "|"]  # fmt: skip
    for i, name in enumerate(CLASSES):
        cells = ["-" if np.isnan(r["class_iou"][i]) else f"{100 * r['class_iou'][i]:.0f}"
                 for r in shown]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _where_table(rows, min_share: float = 0.01) -> list[str]:
    """``--where CLASS``: per predicted class (those with at least ``min_share`` in a column),
    the share of CLASS's labelled pixels the all-looks judge gives it, for the per-class rows."""
    from zodi_core.labels import CLASSES

    shown = [r for r in rows if "where" in r and r["method"] in PER_CLASS_METHODS]
    if not shown:
        return []
    name = shown[0]["where"][0]
    head = [f"{r['domain']}: {_SHORT.get(r['method'], r['method'])}" for r in shown]
    lines = [f"| {name} pixels predicted as (all-looks judge, %) | " + " | ".join(head) + " |",
             "|---" * (len(shown) + 1) + "|"]  # fmt: skip
    for i, cls in enumerate(CLASSES):
        shares = [r["where"][1][i] for r in shown]
        if max(shares) >= min_share:
            lines.append(f"| {cls} | " + " | ".join(f"{100 * v:.0f}" for v in shares) + " |")
    return [*lines, ""]


#: The rows ``--per-class`` tabulates: what the domain looks like, and ZoDi against SDEdit.
PER_CLASS_METHODS = ("real target (reference)", "real target through the VAE", "zodi", "sdedit")
#: ``--vae-ceiling``'s row: the real targets after the pocket VAE's round trip.
VAE_CEILING = PER_CLASS_METHODS[1]
_SHORT = {PER_CLASS_METHODS[0]: "real", VAE_CEILING: "real via VAE"}


def _markdown(rows, args, argv, n, models, seconds, t_judges) -> str:
    import os

    import torch

    omp = os.environ.get("OMP_NUM_THREADS")  # as bench/tables.py: the command as it was run
    cmd = (f"OMP_NUM_THREADS={omp} " if omp else "") + "python bench/fidelity.py " + " ".join(argv)
    lines = [
        "| domain | method | target look (classifier) | layout mIoU, source-only net | "
        "layout mIoU, all-looks net | s/image |",
        "|---|---|---|---|---|---|",
        *(_fmt_row(r) for r in rows),
        "",
        *(_per_class_table(rows) if args.per_class else []),
        *_where_table(rows),
        f"Command: `{cmd.strip()}`; {n} source images per domain, 64x128, T={args.steps}, "
        f"default preset (ADE20K palette, consistent timestep, eta 1), CFG "
        f"{9.0 if args.guidance is None else args.guidance}, negative prompt "
        f"{args.negative_prompt!r}, ControlNet caption {args.controlnet_caption}, models {models}.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores visible, torch threads "
        f"{torch.get_num_threads()}; wall time {seconds:.0f} s (judges {t_judges:.0f} s).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
