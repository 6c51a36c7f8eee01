"""The pocket models' "web corpus": captioned synthetic street scenes in every look.

Scenes come from seed streams of their own, so none is a scene of the source, target or GTA-like
sets; each look is captioned with the paper's prompt for it (clear day: "driving, best quality").
Written as PNGs plus a ``samples`` manifest; captions travel in its ``zodi.captions`` metadata.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zodi_core import manifest
from zodi_core.config import DOMAIN_PHRASES, TransferConfig
from zodi_core.datasets.io import encode_png, read_image, read_label
from zodi_core.datasets.synth import generate_scene, render_scene

#: Corpus looks: the clear-day source look and the five target domains (SPEC §2).
CORPUS_DOMAINS: tuple[str, ...] = ("clear", "night", "snow", "rain", "fog", "game")
#: render_scene style of each look.
STYLE_OF = {"clear": "city", **{d: d for d in DOMAIN_PHRASES}}
#: Seed streams of the corpus (synth.py uses 0-1 source, 10-13 ACDC, 20 GTA5).
STREAM_TRAIN, STREAM_HELDOUT = 100, 101
MANIFEST_NAME = "webcorpus.parquet"


def caption_for(domain: str) -> str:
    """The paper's prompt for ``domain``; clear: "driving, best quality" (empty domain phrase)."""
    if domain == "clear":
        return "driving" + TransferConfig().prompt_suffix
    if domain not in DOMAIN_PHRASES:
        raise ValueError(f"domain: expected one of {CORPUS_DOMAINS}, received {domain!r}")
    return TransferConfig(domain=domain).effective_prompt


@dataclass
class Corpus:
    """A loaded corpus split: images, labels, domains and captions, aligned by index."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N, H, W) uint8 train ids
    domains: list[str]
    captions: list[str]
    sample_ids: list[str]

    def __len__(self) -> int:
        return len(self.sample_ids)


def write_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: tuple[int, int] = (128, 64),
    n_per_domain: int = 200,
    n_heldout: int = 24,
) -> str:
    """Render the corpus under ``out_dir`` and write its manifest; return the manifest path.

    Each scene is rendered in one look only, so looks do not share layouts; the ``heldout`` split
    comes from another stream and is used only to measure quality.
    """
    out = Path(out_dir)
    rows, captions = [], {}
    for split, stream, n in (
        ("train", STREAM_TRAIN, n_per_domain),
        ("heldout", STREAM_HELDOUT, n_heldout),
    ):
        for i in range(n * len(CORPUS_DOMAINS)):
            domain = CORPUS_DOMAINS[i % len(CORPUS_DOMAINS)]
            rng = np.random.default_rng([seed, stream, i])
            scene = generate_scene(rng, size)
            image = render_scene(scene, rng, STYLE_OF[domain])
            sid = f"web_{split}_{domain}_{i:06d}"
            row = {"sample_id": sid, "dataset": "webcorpus", "split": split, "domain": domain}
            row |= {"label_format": "train_ids", "width": size[0], "height": size[1]}
            for kind, path, array in (
                ("image", out / "images" / split / f"{sid}.png", image),
                ("label", out / "labels" / split / f"{sid}_labelTrainIds.png", scene.label),
            ):
                data = encode_png(array)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                sha = hashlib.sha256(data).hexdigest()
                row |= {f"{kind}_uri": str(path), f"{kind}_sha256": sha}
            rows.append(row)
            captions[sid] = caption_for(domain)
    meta = {"captions": json.dumps(captions), "seed": str(seed), "streams": "100,101"}
    return manifest.write_manifest(rows, str(out / MANIFEST_NAME), "samples", extra_metadata=meta)


def read_corpus(uri: str, split: str = "train") -> Corpus:
    """Load one split of a corpus manifest into memory (images, labels, captions)."""
    table = manifest.read_manifest(uri, "samples")
    meta = manifest.manifest_metadata(table)
    if "captions" not in meta:
        raise manifest.ManifestError(
            f"{uri}: no zodi.captions metadata; write it with write_corpus"
        )
    captions = json.loads(meta["captions"])
    rows = [r for r in table.to_pylist() if r["split"] == split]
    if not rows:
        raise manifest.ManifestError(f"{uri}: no rows of split {split!r}")
    images = np.stack([read_image(r["image_uri"]) for r in rows])
    labels = np.stack([read_label(r["label_uri"], r["label_format"]) for r in rows])
    ids = [r["sample_id"] for r in rows]
    return Corpus(images, labels, [r["domain"] for r in rows], [captions[i] for i in ids], ids)


def write_tokenizer(folder: Path, texts: Sequence[str]) -> Any:
    """A CLIP BPE tokenizer whose merges spell every word of ``texts`` as one token.

    The base vocabulary is CLIP's byte-level alphabet, so any text still tokenizes; each word gets
    a chain of merges (``d r`` → ``dr``, …, ``drivin g</w>`` → ``driving</w>``).
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    tokens = [*chars, *(c + "</w>" for c in chars)]
    merges: dict[str, None] = {}  # ordered, without repeats
    # CLIP's pre-tokenizer pattern: words, numbers, single punctuation marks.
    words = sorted({w for t in texts for w in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", t.lower())})
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        for k in range(1, len(symbols)):
            merges["".join(symbols[:k]) + " " + symbols[k]] = None
            tokens.append("".join(symbols[: k + 1]))
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    tok = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=77)
    tok.save_pretrained(folder)  # tokenizer.json; vocab.json and merges.txt for older loaders
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return tok
