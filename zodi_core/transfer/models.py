"""Diffusion components: device/dtype choice, the loader, and the tiny random-weight pipeline.

The sampler receives its components from outside (diffusers' practice), so tests pass tiny ones
built by :func:`write_tiny_models` and loaded through the same :func:`load_components` path as
Stable Diffusion 1.5 + ``control_v11p_sd15_seg``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zodi_core.config import ModelsConfig
from zodi_core.device import resolve_device  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import torch

#: Subfolders of a diffusers Stable Diffusion folder the sampler needs, and the files in each
#: (any one of a tuple suffices).
BASE_SUBFOLDERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "unet": (
        ("config.json",),
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ),
    "vae": (
        ("config.json",),
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ),
    "text_encoder": (("config.json",), ("model.safetensors", "pytorch_model.bin")),
    "tokenizer": (("tokenizer_config.json",), ("vocab.json", "tokenizer.json")),
    "scheduler": (("scheduler_config.json",),),
}
CONTROLNET_FILES: tuple[tuple[str, ...], ...] = (
    ("config.json",),
    ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
)


@dataclass
class Components:
    """The diffusion components of one transfer model, on one device and dtype."""

    unet: Any  # diffusers.UNet2DConditionModel (or a stand-in with the same call signature)
    controlnet: Any  # diffusers.ControlNetModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel
    tokenizer: Any  # transformers.CLIPTokenizer
    scheduler: Any  # diffusers.DDIMScheduler
    #: component → "id@revision", recorded in every transfer manifest row.
    revisions: dict[str, str] = field(default_factory=dict)


# 1. Device and dtype -------------------------------------------------------------------------


# resolve_device is zodi_core.device's: one device/dtype switch for transfer, training and
# evaluation (imported above; still importable from here).


# 2. Loading ----------------------------------------------------------------------------------


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists() or source.startswith(("/", ".", "~"))


def _check_folder(root: Path, needs: dict[str, tuple[tuple[str, ...], ...]], what: str) -> None:
    """Raise FileNotFoundError listing every missing subfolder/file (before diffusers' own error)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: model folder {str(root)!r} does not exist")
    missing = []
    for sub, groups in needs.items():
        folder = root / sub if sub else root
        if not folder.is_dir():
            missing.append(f"{sub}/")
            continue
        for group in groups:
            if not any((folder / name).is_file() for name in group):
                missing.append(f"{sub}/{' or '.join(group)}" if sub else " or ".join(group))
    if missing:
        raise FileNotFoundError(
            f"{what}: model folder {str(root)!r} is incomplete; missing: {', '.join(missing)}"
        )


def folder_digest(root: Path) -> str:
    """Content digest of a local model folder: its config/tokenizer files plus weight sizes.

    Hashing multi-GB weights on every load is too slow; configs and sizes change whenever a
    different model is put there, which is what a lineage record needs. Every shard's cache key
    asks for it, so the digest is remembered per folder state (names, sizes, mtimes): only a
    changed folder is read again.
    """
    files = sorted(p for p in root.rglob("*") if p.is_file())
    state = tuple(
        (p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns)
        for p, st in ((p, p.stat()) for p in files)
    )
    return _folder_digest(str(root), state)


@functools.lru_cache(maxsize=32)
def _folder_digest(root: str, state: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for rel, size, _ in state:
        h.update(rel.encode())
        if rel.endswith((".json", ".txt")):
            h.update((Path(root) / rel).read_bytes())
        else:
            h.update(str(size).encode())
    return h.hexdigest()[:16]


def load_components(
    models: ModelsConfig, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> Components:
    """Build the components with ``from_pretrained`` from hub ids or local folders.

    The base model (``models.base``) provides the subfolders unet/vae/text_encoder/tokenizer/
    scheduler; the ControlNet comes from ``models.controlnet``, or ``<base>/controlnet`` when None.
    Local folders are checked first (the error lists what is missing) and loaded with
    ``local_files_only``. Revisions: the hub revision asked for (or ``main``), or for a local
    folder ``local:<content digest>``.
    """
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from transformers import CLIPTextModel, CLIPTokenizer

    from zodi_core.hub import HubUnreachableError, is_network_error, offline_remedy, require_hub

    dtype = dtype or torch.float32
    device = torch.device(device)
    base = models.base
    base_local = _is_local(base)
    if base_local:
        base_path = Path(base).expanduser()
        _check_folder(base_path, BASE_SUBFOLDERS, "models.base")
        base = str(base_path)
    if models.controlnet is None:
        if not base_local:
            cn_source, cn_sub, cn_local = base, "controlnet", False
        else:
            _check_folder(
                base_path / "controlnet",
                {"": CONTROLNET_FILES},
                "models.controlnet (<base>/controlnet)",
            )
            cn_source, cn_sub, cn_local = base, "controlnet", True
    else:
        cn_source, cn_sub, cn_local = models.controlnet, None, _is_local(models.controlnet)
        if cn_local:
            cn_source = str(Path(cn_source).expanduser())
            _check_folder(Path(cn_source), {"": CONTROLNET_FILES}, "models.controlnet")

    cn_rev = models.controlnet_revision if models.controlnet is not None else models.revision
    # A hub id: the hub is asked once, in seconds, instead of ~30 s of retries per file: out of
    # reach, cached files load from the cache and missing ones fail with a network message.
    base_cached = cn_cached = False
    if not base_local:
        base_cached = require_hub(base, models.revision, "model_index.json", "models.base")
    if cn_sub:
        cn_cached = base_cached
    elif not cn_local:
        cn_cached = require_hub(cn_source, cn_rev, "config.json", "models.controlnet")

    def kw(local: bool, revision: str | None, sub: str | None, cached: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"local_files_only": True} if local else {"revision": revision}
        if cached:
            out["local_files_only"] = True
        if sub:
            out["subfolder"] = sub
        return out

    def load(cls: Any, source: str, what: str, **kwargs: Any) -> Any:
        try:
            return cls.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as err:
            if not _is_local(source) and is_network_error(err):
                raise HubUnreachableError(
                    f"{what}: loading hub id {source!r} failed: a network problem; "
                    f"{offline_remedy(source, what)}"
                ) from None
            raise FileNotFoundError(
                f"{what}: could not load {source!r} (subfolder {kwargs.get('subfolder')!r}) "
                f"from a local folder, the hub or its cache: {err}"
            ) from None

    base_kw = lambda sub: kw(base_local, models.revision, sub, base_cached)  # noqa: E731
    unet = load(UNet2DConditionModel, base, "models.base", dtype=dtype, **base_kw("unet"))
    vae = load(AutoencoderKL, base, "models.base", dtype=dtype, **base_kw("vae"))
    text_encoder = load(CLIPTextModel, base, "models.base", dtype=dtype, **base_kw("text_encoder"))
    tokenizer = load(CLIPTokenizer, base, "models.base", **base_kw("tokenizer"))
    scheduler = load(DDIMScheduler, base, "models.base", **base_kw("scheduler"))
    cn_kw = kw(cn_local, cn_rev, cn_sub, cn_cached)
    controlnet = load(ControlNetModel, cn_source, "models.controlnet", dtype=dtype, **cn_kw)

    for module in (unet, controlnet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    # PyTorch SDPA attention (diffusers' default when available; set explicitly so a config that
    # asked for another processor cannot silently select the slow path).
    for module in (unet, controlnet, vae):
        module.set_attn_processor(AttnProcessor2_0())

    base_rev = f"local:{folder_digest(Path(base))}" if base_local else (models.revision or "main")
    if cn_local:
        cn_root = Path(cn_source) / (cn_sub or "")
        cn_id, cn_revision = str(cn_root), f"local:{folder_digest(cn_root)}"
    else:
        cn_id = cn_source if cn_sub is None else f"{cn_source}/{cn_sub}"
        cn_revision = cn_rev or "main"
    revisions = {"base": f"{base}@{base_rev}", "controlnet": f"{cn_id}@{cn_revision}"}
    return Components(unet, controlnet, vae, text_encoder, tokenizer, scheduler, revisions)


# 3. Tiny models ------------------------------------------------------------------------------

#: Stable Diffusion 1.5's DDIM scheduler configuration.
SD15_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}


def _tiny_tokenizer_files(folder: Path) -> None:
    """A byte-level CLIP BPE vocabulary (every byte, word-final and not) plus a few merges.

    Built offline: the tiny text encoder only needs valid token ids, not a trained vocabulary.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges = ["d r", "i v", "dr iv", "n i", "g h", "t</w>"]
    merges = [m for m in merges if m.count(" ") == 1]
    for m in merges:
        vocab_list.append(m.replace(" ", ""))
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def activate_controlnet(controlnet: Any, seed: int = 0, std: float = 0.05) -> None:
    """Give a fresh ``ControlNetModel.from_unet`` non-zero output convolutions.

    ``from_unet`` zero-initialises the residual convolutions (``controlnet_down_blocks``,
    ``controlnet_mid_block``) and the last convolution of the conditioning encoder, as ControlNet
    training starts. Left so, an untrained ControlNet is inert: its residuals are zero, the
    condition map cannot change the output, and a condition that is ignored or mis-fed goes
    unnoticed. Random weights (normal, ``std``; a generator of its own, so the rest of the model's
    initialisation is unchanged) make every part of the condition path count; the conditioning
    encoder is re-drawn He-normal, as its default initialisation all but erases the image.
    """
    import torch

    g = torch.Generator("cpu").manual_seed(10_007 + int(seed))
    convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    embedding = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        for conv in convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * std)
        # The conditioning encoder: He-normal weights throughout, so that its output (added to
        # the latent features) varies with the condition image as much as the features do.
        for conv in [embedding.conv_in, *embedding.blocks, embedding.conv_out]:
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            conv.bias.zero_()


def build_tiny_components(seed: int = 0) -> Components:
    """Random-weight components with SD 1.5's architecture, shrunk.

    The VAE has 4 down blocks (downsampling by 8, as SD 1.5's), so the ControlNet conditioning
    encoder built by ``ControlNetModel.from_unet`` (three stride-2 stages) matches the latent size.
    The ControlNet's zero convolutions get random weights (:func:`activate_controlnet`), so the
    condition map and the ControlNet switch of every method change the generated image.
    """

    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    controlnet = ControlNetModel.from_unet(unet)
    activate_controlnet(controlnet, seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    )
    tokenizer = tiny_tokenizer()
    vocab = tokenizer.get_vocab()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    scheduler = DDIMScheduler(**SD15_SCHEDULER)
    for m in (unet, controlnet, vae, text_encoder):
        m.eval().requires_grad_(False)
    return Components(unet, controlnet, vae, text_encoder, tokenizer, scheduler, {"base": "tiny"})


def write_tiny_models(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny pipeline in diffusers' folder format (``model_index.json``, one subfolder per
    component, ``controlnet/``), loadable by :func:`load_components` like real weights."""
    out = Path(out_dir)
    c = build_tiny_components(seed)
    out.mkdir(parents=True, exist_ok=True)
    c.unet.save_pretrained(out / "unet")
    c.vae.save_pretrained(out / "vae")
    c.text_encoder.save_pretrained(out / "text_encoder")
    c.tokenizer.save_pretrained(out / "tokenizer")
    c.scheduler.save_pretrained(out / "scheduler")
    c.controlnet.save_pretrained(out / "controlnet")
    write_model_index(out)
    return out


def write_model_index(out: Path) -> None:
    """``model_index.json`` of an SD 1.5 + ControlNet folder (what ``from_pretrained`` reads)."""
    index = {
        "_class_name": "StableDiffusionControlNetPipeline",
        "_diffusers_version": _diffusers_version(),
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "controlnet": ["diffusers", "ControlNetModel"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))


def tiny_tokenizer() -> Any:
    """A small CLIPTokenizer built offline (the tiny models' and the tiny CLIP's)."""
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        _tiny_tokenizer_files(Path(tmp))
        vocab = json.loads((Path(tmp) / "vocab.json").read_text())
        merges = (Path(tmp) / "merges.txt").read_text().splitlines()[1:]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(x.split()) for x in merges if x])
    tokenizer.model_max_length = 77
    return tokenizer


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
