"""The models fingerprint hashes the weights' bytes, once per change (issue 18).

Replacing a folder's weights by others of the same size (the tiny models of seed 1 over those of
seed 0, copied in place: same names, sizes and inodes) changes the generation digest, and a rerun
regenerates the images; a rerun without changes reads no weights again, not even in a new
process (the file hashes are remembered on disk by file state).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_models import tiny_transfer_config
from PIL import Image

from zodi_core import model_source
from zodi_core.config import DatasetSpec, ModelsConfig
from zodi_core.manifest import read_manifest
from zodi_core.transfer.lineage import generation_digest, models_fingerprint
from zodi_core.transfer.models import write_tiny_models
from zodi_core.transfer.runner import transfer_manifest

WEIGHTS = (
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
    "controlnet/diffusion_pytorch_model.safetensors",
)


@pytest.fixture
def hash_calls(tmp_path, monkeypatch) -> list[Path]:
    """Every file whose bytes are hashed, with an empty hash cache of this test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(model_source, "_KNOWN", {})
    calls: list[Path] = []
    real = model_source.hash_file

    def counting(path: Path, *args, **kwargs) -> str:
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(model_source, "hash_file", counting)
    return calls


@pytest.fixture(scope="module")
def two_tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lineage-models")
    return write_tiny_models(root / "seed0", seed=0), write_tiny_models(root / "seed1", seed=1)


def _samples(synthetic_root: Path, tmp_path: Path) -> str:
    from zodi_core.datasets.ingest import ingest_dataset

    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="train")
    return ingest_dataset(spec, str(tmp_path / "samples.parquet"), progress=False).manifest_uri


def test_same_size_weights_change_the_digest_and_a_rerun_regenerates(
    two_tiny_models, synthetic_root, tmp_path, hash_calls
):
    seed0, seed1 = two_tiny_models
    models = tmp_path / "models"
    shutil.copytree(seed0, models)
    for rel in WEIGHTS:  # the case the issue tried: a fine-tune of the same architecture
        assert (seed0 / rel).stat().st_size == (seed1 / rel).stat().st_size
        assert (seed0 / rel).read_bytes() != (seed1 / rel).read_bytes()
    samples = _samples(synthetic_root, tmp_path)
    ids = sorted(read_manifest(samples, "samples").column("sample_id").to_pylist())[:2]
    config = tiny_transfer_config(models)
    out = str(tmp_path / "out")

    def run():
        return transfer_manifest(samples, config, out, sample_ids=ids, progress=False)

    first = run()
    assert (first.written, first.skipped) == (2, 0)
    assert run().skipped == 2  # unchanged: every image is reused

    inodes = {rel: (models / rel).stat().st_ino for rel in WEIGHTS}
    for rel in WEIGHTS:
        shutil.copyfile(seed1 / rel, models / rel)  # in place: same name, size and inode
    assert {rel: (models / rel).stat().st_ino for rel in WEIGHTS} == inodes

    assert generation_digest(config) != first.config_digest
    second = run()
    assert (second.written, second.skipped) == (2, 0)  # the new model made new images
    rows = {r["sample_id"]: r for r in second.rows}
    for row in first.rows:
        new = rows[row["sample_id"]]
        assert new["generated_uri"] != row["generated_uri"]
        assert new["model_revisions"] != row["model_revisions"]  # the rows name the new model
        old_pixels = np.asarray(Image.open(row["generated_uri"]))
        assert not np.array_equal(old_pixels, np.asarray(Image.open(new["generated_uri"])))


def test_a_rerun_without_changes_hashes_nothing_again(two_tiny_models, tmp_path, hash_calls):
    seed0, seed1 = two_tiny_models
    folder = tmp_path / "models"
    shutil.copytree(seed0, folder)
    models = ModelsConfig(base=str(folder), controlnet=None)

    fingerprint = models_fingerprint(models)
    hashed = {p.relative_to(folder).as_posix() for p in hash_calls}
    assert set(WEIGHTS) <= hashed and len(hash_calls) == len(hashed)  # each file once
    assert "model_index.json" not in hashed  # the loader does not read it

    hash_calls.clear()
    for _ in range(3):  # every shard asks: nothing is read again
        assert models_fingerprint(models) == fingerprint
    assert hash_calls == []

    model_source._KNOWN.clear()  # a new process: the hashes on disk answer
    assert models_fingerprint(models) == fingerprint
    assert hash_calls == []

    unet = "unet/diffusion_pytorch_model.safetensors"
    shutil.copyfile(seed1 / unet, folder / unet)  # one file replaced: only it is read
    assert models_fingerprint(models) != fingerprint
    assert [p.relative_to(folder).as_posix() for p in hash_calls] == [unet]


def test_the_digest_is_of_the_bytes_and_an_unwritable_cache_only_costs_a_rehash(
    two_tiny_models, tmp_path, monkeypatch, hash_calls
):
    seed0, _ = two_tiny_models
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # the cache dir cannot be created
    unet = seed0 / "unet" / "diffusion_pytorch_model.safetensors"
    import hashlib

    assert model_source.file_sha256(unet) == hashlib.sha256(unet.read_bytes()).hexdigest()
    model_source._KNOWN.clear()
    model_source.file_sha256(unet)
    assert hash_calls == [unet, unet]  # not remembered on disk: hashed again, no error


def test_a_new_process_reads_no_weights_of_an_unchanged_folder(two_tiny_models, tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "models"
    shutil.copytree(two_tiny_models[0], folder)
    script = (
        "import sys\n"
        "from zodi_core import model_source\n"
        "from zodi_core.config import ModelsConfig\n"
        "read = []\n"
        "real = model_source.hash_file\n"
        "model_source.hash_file = lambda p, *a, **k: read.append(p) or real(p, *a, **k)\n"
        "print(model_source.models_fingerprint(ModelsConfig(base=sys.argv[1], controlnet=None)))\n"
        "print(len(read))\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}

    def run() -> list[str]:
        done = subprocess.run([sys.executable, "-c", script, str(folder)], env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout.split()

    fingerprint, first = run()
    assert int(first) > 0  # the first process hashes every file
    assert run() == [fingerprint, "0"]  # the next one reads none
