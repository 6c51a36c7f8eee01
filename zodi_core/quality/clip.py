"""CLIP for the prompt-alignment scores: loading, a tiny random CLIP for tests, the two scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zodi_core.config import CLIP_MODEL_ID
from zodi_core.model_source import is_local
from zodi_core.transfer.models import clip_text_config, tiny_tokenizer

#: The neutral text the directional score starts from (the prompts are "driving <domain>...").
NEUTRAL_TEXT = "driving"


@dataclass
class Clip:
    """A CLIP model with its tokenizer and image processor, on one device; its weights need no
    grad (:func:`load_clip`, :func:`build_tiny_clip`), so an embedding builds no graph."""

    model: Any  # transformers.CLIPModel
    tokenizer: Any  # transformers.CLIPTokenizer
    image_processor: Any  # transformers.CLIPImageProcessor
    source: str

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float64 image embeddings (projected, not normalised) of (H, W, 3) uint8 RGB."""
        inputs = self.image_processor(images=list(images), return_tensors="pt")
        return _features(self.model.get_image_features(**inputs.to(self.model.device)))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float64 text embeddings (projected, not normalised)."""
        tok = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        return _features(self.model.get_text_features(**tok.to(self.model.device)))


def _features(out: Any) -> np.ndarray:
    # transformers 5 returns a model output whose pooler_output is the projected embedding
    return out.pooler_output.float().cpu().numpy().astype(np.float64)


def load_clip(source: str = CLIP_MODEL_ID, device: str = "cpu") -> Clip:  # default: config's
    """Load CLIP from a hub id or a local folder (``save_pretrained`` layout)."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    if is_local(source) and not Path(source).expanduser().is_dir():
        raise FileNotFoundError(f"quality.clip {source}: not a folder; give a hub id or a folder")
    model = CLIPModel.from_pretrained(source).to(device).eval().requires_grad_(False)
    tokenizer, processor = (c.from_pretrained(source) for c in (CLIPTokenizer, CLIPImageProcessor))
    return Clip(model, tokenizer, processor, source)


def build_tiny_clip(seed: int = 0) -> Clip:
    """A random-weight CLIP with the real architecture, shrunk (32 px images, 16-d embeddings),
    and the offline byte-level tokenizer of the tiny diffusion models. For tests and the demo."""

    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=clip_text_config(tokenizer),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config).eval().requires_grad_(False)
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return Clip(model, tokenizer, processor, "tiny")


def write_tiny_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """Write :func:`build_tiny_clip` as a folder :func:`load_clip` reads like real weights."""
    clip = build_tiny_clip(seed)
    for part in (clip.model, clip.tokenizer, clip.image_processor):
        part.save_pretrained(out_dir)
    return Path(out_dir)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


def clip_scores(
    generated: np.ndarray, source: np.ndarray, prompt: np.ndarray, neutral: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(clip_score, clip_direction)``, each (N,) float64 in [-1, 1], from (N, D) image
    embeddings, (N, D) or (D,) prompt embeddings and the (D,) :data:`NEUTRAL_TEXT` embedding."""
    prompt = np.broadcast_to(prompt, generated.shape)
    score = np.sum(_unit(generated) * _unit(prompt), axis=-1)
    d_img = _unit(_unit(generated) - _unit(source))
    d_txt = _unit(_unit(prompt) - _unit(np.broadcast_to(neutral, generated.shape)))
    return score, np.sum(d_img * d_txt, axis=-1)
