"""How the pocket ControlNet's layout following grows with its training steps (issue 19).

Continues the ControlNet of the committed pocket models (``--models``, base frozen as in
``zodi pocket-models``) in ``--chunks`` chunks of ``--chunk-steps`` steps, each through
:func:`zodi_core.pocket.train.train_pocket` on the same corpus and loss, and measures every chunk
with the model card's own :func:`zodi_core.pocket.measure.measure_quality` (layout mIoU of
ControlNet generations on held-out label maps; the looks). Each chunk starts a fresh AdamW at the
preset's ControlNet learning rate and draws its batches with its own seed, so the curve is the
one of continued training, not of a single uninterrupted run. Resumable: a finished chunk is
kept (``row.json`` in its folder), an unfinished one resumes from its checkpoint.

    OMP_NUM_THREADS=1 python bench/controlnet_steps.py --out /tmp/cn --chunks 3 --chunk-steps 1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="a pocket models folder (default: the committed weights)")
    ap.add_argument("--out", required=True, help="work folder (corpus, one folder per chunk)")
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--chunk-steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)

    import torch
    from diffusers import ControlNetModel

    from zodi_core.config import ModelsConfig
    from zodi_core.pocket import pocket_models_dir
    from zodi_core.pocket.corpus import read_corpus, write_corpus
    from zodi_core.pocket.measure import measure_quality
    from zodi_core.pocket.train import PRESETS, _spec_json, train_pocket
    from zodi_core.transfer.models import load_components

    torch.set_num_threads(args.threads)
    base = Path(args.models) if args.models else pocket_models_dir()
    state = json.loads((base / "training_state.json").read_text())
    spec = PRESETS["full"]
    if state["spec"] != _spec_json(spec):
        raise SystemExit(f"{base}: not trained with the preset 'full' (training_state.json)")
    out = Path(args.out)
    manifest = out / "corpus" / "webcorpus.parquet"
    if not manifest.is_file():
        write_corpus(out / "corpus", seed=spec.seed, size=(spec.width, spec.height),
                     n_per_domain=spec.n_per_domain, n_heldout=spec.n_heldout)  # fmt: skip
    train, heldout = (read_corpus(str(manifest), split) for split in ("train", "heldout"))

    def measure(folder: Path) -> dict:
        t0 = time.perf_counter()
        components = load_components(ModelsConfig(base=str(folder), controlnet=None), "cpu")
        quality = measure_quality(components, train, heldout, seed=spec.seed)
        quality.pop("_samples")
        return {**quality, "measure_seconds": round(time.perf_counter() - t0, 1)}

    first = out / "row0.json"  # the models as given, measured once
    if not first.is_file():
        row = {"controlnet_steps": spec.controlnet_steps, "train_seconds": 0.0, **measure(base)}
        first.write_text(json.dumps(row))
    rows = [json.loads(first.read_text())]
    for k in range(1, args.chunks + 1):
        folder = out / f"chunk{k}"
        done = folder / "row.json"
        if done.is_file():  # trained and measured by an earlier run
            rows.append(json.loads(done.read_text()))
            continue
        chunk = replace(spec, controlnet_steps=args.chunk_steps, seed=spec.seed + k)
        if not (folder / "training_state.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            for part in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
                shutil.copytree(base / part, folder / part, dirs_exist_ok=True)
            phases = {p: state["phases"][p] for p in ("vae", "unet")}
            (folder / "training_state.json").write_text(
                json.dumps({"spec": _spec_json(chunk), "phases": phases}, indent=2)
            )
        start = ControlNetModel.from_pretrained(  # the chunk continues the last one
            base / "controlnet" if k == 1 else out / f"chunk{k - 1}" / "controlnet"
        )
        t0 = time.perf_counter()
        with mock.patch.object(ControlNetModel, "from_unet", return_value=start):
            train_pocket(train, folder, chunk, threads=args.threads)
        seconds = round(time.perf_counter() - t0, 1)
        steps = spec.controlnet_steps + k * args.chunk_steps
        rows.append({"controlnet_steps": steps, "train_seconds": seconds, **measure(folder)})
        done.write_text(json.dumps(rows[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)

    print("| ControlNet steps | layout mIoU (ControlNet generations) | without ControlNet "
          "| looks recognised (mean) | train s |")  # fmt: skip
    print("|---|---|---|---|---|")
    for r in rows:
        lay, looks = r["layout_following"], r["text_conditioning"]["mean_accuracy_generated"]
        print(f"| {r['controlnet_steps']} | {lay['miou_controlnet_generations']} | "
              f"{lay['miou_without_controlnet']} | {looks:.0%} | {r['train_seconds']} |")  # fmt: skip
    print(f"\nMachine: torch threads {args.threads}, {torch.__version__}; models {base}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
