"""How well a pocket UNet predicts the clean latent at high noise (docs/fidelity.md §1).

A generation's layout and look are decided at the first, noisiest steps, where the sampler turns
the UNet's ε into x0 = (z_t − σ_t ε) / α_t: an ε error e becomes an x0 error e·σ_t/α_t (×14.6 at
t = 999). A UNet whose x0 MSE at t = 999 is above the mean latent's (what predicting the data mean
gives) starts every generation off the data. This prints, on held-out corpus latents, the x0 MSE
of the UNet (empty caption) at several timesteps beside that of the mean latent.

    OMP_NUM_THREADS=1 python bench/pocket_x0.py                       # the committed weights
    OMP_NUM_THREADS=1 python bench/pocket_x0.py --models DIR --corpus DIR/corpus/webcorpus.parquet
"""

from __future__ import annotations

import argparse
import tempfile


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="pocket models folder (default: the committed weights)")
    ap.add_argument(
        "--corpus",
        help="web corpus manifest (default: rendered afresh with the full preset's seed)",
    )
    ap.add_argument("--n", type=int, default=32, help="held-out images")
    ap.add_argument("--timesteps", default="999,900,700,500", help="comma-separated")
    ap.add_argument("--seed", type=int, default=0, help="noise seed")
    args = ap.parse_args(argv)

    import torch

    from zodi_core.config import ModelsConfig
    from zodi_core.pocket import pocket_models_dir
    from zodi_core.pocket.corpus import read_corpus, write_corpus
    from zodi_core.pocket.train import PRESETS
    from zodi_core.transfer.models import load_components

    models = args.models or str(pocket_models_dir())
    c = load_components(ModelsConfig(base=models, controlnet=None), "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus
        if corpus is None:
            spec = PRESETS["full"]
            corpus = write_corpus(
                tmp, seed=spec.seed, size=(spec.width, spec.height),
                n_per_domain=spec.n_per_domain, n_heldout=spec.n_heldout,
            )  # fmt: skip
        held = read_corpus(str(corpus), "heldout")
    x = torch.from_numpy(held.images[: args.n]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = c.vae.encode(x).latent_dist.mean * c.vae.config.scaling_factor
        abar = c.scheduler.alphas_cumprod
        ids = c.tokenizer(
            [""] * len(z), padding="max_length", max_length=77, return_tensors="pt"
        ).input_ids
        emb = c.text_encoder(ids)[0]
        g = torch.Generator().manual_seed(args.seed)
        mean_mse = float(((z - z.mean(0, keepdim=True)) ** 2).mean())
        print(
            f"models {models}; {len(z)} held-out latents; x0 MSE of the mean latent {mean_mse:.3f}"
        )
        for t in (int(v) for v in args.timesteps.split(",")):
            eps = torch.randn(z.shape, generator=g)
            z_t = c.scheduler.add_noise(z, eps, torch.tensor([t]))
            a, s = abar[t].sqrt(), (1 - abar[t]).sqrt()
            pred = c.unet(z_t, t, encoder_hidden_states=emb).sample
            x0 = (z_t - s * pred) / a
            print(f"t={t}: x0 MSE {float(((x0 - z) ** 2).mean()):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
