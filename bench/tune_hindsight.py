"""`tune-strength`'s choice against the best strength in hindsight (issue 19, what issue 14 left).

Hindsight: one ``bench/tables.py --variants table1 --strength S`` run per strength (a ZoDi model
trained on the images transferred at S, evaluated on the real target); each run's ``--json``.
The tuner: :func:`zodi_core.transfer.tune.tune_strength` on the first ``--n`` source val images
with the same transfer settings as the tables (default preset at 64x128, T=20, CFG 9, negative
prompt ""), the layout scored by the tables run's source-only net; it sees no target image.

    OMP_NUM_THREADS=1 python bench/tune_hindsight.py --workdir /tmp/hs_0.65 --domain rain \
        --strengths 0.45,0.65,0.85 --hindsight 0.45:/tmp/hs_0.45.json 0.65:/tmp/hs_0.65.json \
        0.85:/tmp/hs_0.85.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="a bench/tables.py --workdir (its data, net)")
    ap.add_argument("--domain", required=True)
    ap.add_argument("--strengths", default="0.45,0.65,0.85")
    ap.add_argument("--n", type=int, default=32, help="source val images the tuner transfers")
    ap.add_argument("--margin", type=float, default=5.0, help="layout mIoU margin, points")
    ap.add_argument(
        "--hindsight",
        nargs="*",
        default=[],
        help="STRENGTH:FILE, a bench/tables.py --json of that --strength (repeat)",
    )
    args = ap.parse_args(argv)

    from zodi_cli._common import models_overrides
    from zodi_core.config import TransferConfig
    from zodi_core.evaluation import load_model
    from zodi_core.pocket import pocket_models_dir
    from zodi_core.transfer import tune

    work = Path(args.workdir)
    val = work / "artifacts" / "manifests" / "cityscapes-val.parquet"
    ckpt = next(work.glob("artifacts/train/source-only/seed0/*/iter_*.pth"))
    seg_config = next(work.glob("configs/tables_*.py"))
    models = str(pocket_models_dir())
    config = TransferConfig.preset(
        "default", models=models_overrides(models, None),
        short_side=64, size_multiple=64, num_inference_steps=20, guidance_scale=9.0,
        negative_prompt="", seed=0, domain=args.domain, device="cpu",
    )  # fmt: skip
    strengths = [float(s) for s in args.strengths.split(",")]
    out = tune.tune_strength(
        str(val), config, strengths, str(work / "tune" / args.domain), n=args.n,
        seg_model=load_model(str(seg_config), str(ckpt)), margin=args.margin, scale=(128, 64),
    )  # fmt: skip
    print(tune.render_tune_markdown(out["rows"], out["recommended"], args.margin, args.domain))
    runs = {}
    for item in args.hindsight:
        strength_text, path = item.split(":", 1)
        result = json.loads(Path(path).read_text())
        rows = {r["variant"]: r["real"] for r in result["rows"] if r["domain"] == args.domain}
        runs[float(strength_text)] = rows
    # the seeds every run has (a 3-seed tables run may stand for one strength, 1-seed runs for
    # the others): the first k of each, so every strength is compared on the same seeds
    k = min((len(rows["zodi"]) for rows in runs.values()), default=0)
    hindsight = {s: (sum(r["zodi"][:k]) / k, r["source-only"][0]) for s, r in runs.items()}
    if hindsight:
        best = max(hindsight, key=lambda s: hindsight[s][0])
        print(f"| strength | ZoDi real target mIoU (hindsight, mean of {k} seed(s)) "
              "| source only (seed 0) |")  # fmt: skip
        print("|---|---|---|")
        for s, (z, b) in sorted(hindsight.items()):
            print(f"| {s:g} | {z:.1f} | {b:.1f} |")
        print(
            f"\ntune-strength recommends {out['recommended']}; the best in hindsight is {best:g} "
            f"({hindsight[best][0]:.1f} mIoU; at the recommendation: "
            f"{hindsight.get(out['recommended'], (float('nan'),))[0]:.1f})."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
