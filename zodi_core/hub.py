"""Fetching every model a run needs into one folder, for workers without internet.

GPU workers of many clusters have no internet. :func:`download_models` fetches what a run needs,
on a machine with internet, into one folder that ``--models DIR`` and the pipeline config accept
as is::

    DIR/
      model_index.json unet/ vae/ text_encoder/ tokenizer/ scheduler/   Stable Diffusion 1.5
      controlnet/                                                        the segmentation ControlNet
      torch/hub/checkpoints/<file>.pth                                   backbone ImageNet weights
      zodi-models.json                                                   what was fetched, from where

The diffusers folders come with ``snapshot_download`` (one weights variant; its metadata stays,
so a rerun fetches only what changed), backbone weights into torch's hub layout.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from zodi_core.config import ModelsConfig, TrainConfig
from zodi_core.model_source import (
    BASE_SUBFOLDERS,
    NETWORK_TIMEOUT,
    HubUnreachableError,
    ModelSource,
    Needs,
    folder_problem,
    is_local,
    is_network_error,
    model_sources,
    resolve_hub,
    with_variant,
)
from zodi_core.seg.train import http_url, load_config, weights_refs

#: The record of what :func:`download_models` fetched, at the root of the folder.
RECORD_NAME = "zodi-models.json"

#: Where the backbone weights go inside the folder: torch's hub layout under ``TORCH_HOME``.
TORCH_HOME_NAME = "torch"

Variant = Literal["fp16", "fp32"]


# 1. What a run needs ---------------------------------------------------------------------------


def allow_patterns(needs: Needs, variant: Variant) -> list[str]:
    """The repository files the loader needs: per group its first alternative, weights in
    ``variant``; the tokenizer folder whole."""
    patterns = []
    for sub, groups in needs.items():
        names = ["*"] if sub == "tokenizer" else [group[0] for group in groups]
        names = [with_variant(n, variant) if n.endswith(".safetensors") else n for n in names]
        patterns += [f"{sub}/{name}" if sub else name for name in names]
    return patterns


def base_patterns(variant: Variant) -> list[str]:
    """Files of the Stable Diffusion repository a run needs (model_index.json and the loader's)."""
    return ["model_index.json", *allow_patterns(BASE_SUBFOLDERS, variant)]


def backbone_weights_urls(mmseg_config: str) -> list[str]:
    """Download URLs of the ImageNet weights ``mmseg_config`` initialises its backbone from (the
    references training resolves, ``open-mmlab://`` through mmengine's table; none: [])."""
    urls = []
    for ref in weights_refs(load_config(mmseg_config)).values():
        url = http_url(ref)
        if url is None:
            raise ValueError(
                f"--mmseg-config {mmseg_config}: backbone weights {ref!r} are not a download URL "
                "(a local file needs no download)"
            )
        urls.append(url)
    return list(dict.fromkeys(urls))


# 2. Download -----------------------------------------------------------------------------------


@dataclass
class Fetched:
    """One thing :func:`download_models` put in the folder."""

    name: str  # "base", "controlnet", "backbone"
    source: str  # hub id or URL
    path: Path  # where it is
    revision: str  # commit of the hub repository, or the URL's file name
    files: dict[str, int] = field(default_factory=dict)  # relative path → bytes
    skipped: bool = False  # already there (from an earlier run)

    @property
    def size(self) -> int:
        return sum(self.files.values())


@dataclass
class DownloadedModels:
    """The folder :func:`download_models` filled, and what is in it."""

    out: Path
    fetched: list[Fetched]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.fetched)

    def usage(self) -> list[str]:
        """The lines to use the folder with: command line, pipeline config, training."""
        out = str(self.out)
        lines = [
            f"zodi transfer ... --models {out}",
            f"zodi pipeline --config C --models {out}",
            f"config: transfer.models: {{base: {out}, controlnet: {out}/controlnet}}",
        ]
        backbones = [f.path for f in self.fetched if f.name == "backbone"]
        if backbones:
            lines.append(
                f"training (backbone weights): TORCH_HOME={out}/{TORCH_HOME_NAME}, or "
                f"--pretrained / train.pretrained: {backbones[0]}"
            )
        return lines

    def summary(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "total_bytes": self.total_size,
            "fetched": [
                {**asdict(f), "path": str(f.path), "files": len(f.files), "bytes": f.size}
                for f in self.fetched
            ],
            "models": str(self.out),
            "controlnet": str(self.out / "controlnet"),
            "torch_home": str(self.out / TORCH_HOME_NAME),
        }


def format_size(n: int) -> str:
    """Bytes for a person: ``1.7 GB``, ``723 MB``, ``12 kB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _snapshot(
    name: str,
    source: ModelSource,
    dest: Path,
    variant: Variant,
    record: dict[str, Any],
    say: Callable[[str], None],
    timeout: float,
) -> Fetched:
    """Fetch what the loader needs of the hub id into ``dest`` with ``snapshot_download`` at the
    commit the hub names for the revision; check that the loader finds it. With the hub out
    of reach, a folder an earlier run of the same request filled is kept if snapshot_download's
    own record of that commit (``local_files_only``) finds every file it fetched."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError
    from huggingface_hub.utils import tqdm

    repo, field_name = source.source, source.field
    patterns = base_patterns(variant) if name == "base" else allow_patterns(source.needs, variant)
    if constants.HF_HUB_OFFLINE:
        raise HubUnreachableError(
            f"{field_name}: cannot download {repo!r}: HF_HUB_OFFLINE is set; run `zodi models "
            "download` on a machine with internet (HF_HUB_OFFLINE unset), then copy the folder"
        )
    try:
        commit = resolve_hub(source, timeout, fresh=True).commit
    except HubUnreachableError as err:
        previous = record.get(name, {})
        asked = (previous.get("source"), previous.get("requested"), previous.get("variant"))
        lost = "no earlier download of this request in the folder"
        if asked == (repo, source.revision, variant):
            commit, names = previous["revision"], list(previous["files"])
            try:
                snapshot_download(repo, revision=commit, allow_patterns=names, local_dir=dest,
                                  local_files_only=True)  # fmt: skip
                lost = ""
            except IncompleteSnapshotError as incomplete:
                lost = str(incomplete).split(" Re-run")[0]
        if lost:
            raise HubUnreachableError(
                f"{field_name}: cannot download {repo!r}: the hub ({constants.ENDPOINT}) is "
                f"{err.reason}: a network problem ({lost}); run `zodi models download` on a "
                "machine with internet (check HF_ENDPOINT and proxy settings), copy the folder "
                "here and pass --models DIR; or set HF_HUB_OFFLINE=1 to load from the hub cache",
                err.reason,
            ) from None
        say(f"{name}: {repo}@{commit[:12]} already in {dest} (hub {err.reason})")
        plan = []
    else:
        kwargs = {"revision": commit, "local_dir": dest}
        quiet = functools.partial(tqdm, disable=True)  # the dry run's bars say nothing
        dry_run = functools.partial(
            snapshot_download, repo, dry_run=True, tqdm_class=quiet, **kwargs
        )
        plan = dry_run(allow_patterns=patterns)
        planned = {f.filename for f in plan}
        missing = [p for p in patterns if f".{variant}." in p and p not in planned]
        if missing:
            # Not every repository holds every weights file in the variant: the standard one then.
            say(f"{name}: {repo} has no {variant} variant of {', '.join(missing)}; "
                "fetching the standard weights instead")  # fmt: skip
            patterns = [p.replace(f".{variant}.", ".") if p in missing else p for p in patterns]
            plan = dry_run(allow_patterns=patterns)
        names = [p.filename for p in plan]
        total = sum(p.file_size or 0 for p in plan)
        todo = sum(p.file_size or 0 for p in plan if p.will_download)
        say(
            f"{name}: {repo}@{commit[:12]}: {len(plan)} files, {format_size(total)} "
            f"({format_size(todo)} to fetch) → {dest}"
        )
    if any(p.will_download for p in plan):
        try:
            snapshot_download(repo, allow_patterns=patterns, **kwargs)
        except Exception as err:  # noqa: BLE001 - a network failure is one line, the rest as is
            if not is_network_error(err):
                raise
            raise HubUnreachableError(
                f"{field_name}: downloading {repo!r} from {constants.ENDPOINT} failed: a network "
                f"problem ({' '.join(str(err).split())[:160]}); check the connection (HF_ENDPOINT, "
                "proxy) and run `zodi models download` again: it resumes"
            ) from None
    if problem := folder_problem(dest, source.needs, field_name):
        raise FileNotFoundError(f"{problem} (not in the hub repository {repo!r})")
    files = {n: (dest / n).stat().st_size for n in names}  # measured on disk
    return Fetched(name, repo, dest, commit, files, skipped=not any(p.will_download for p in plan))


def _fetch_weights(url: str, out: Path, say: Callable[[str], None]) -> Fetched:
    """Fetch one backbone checkpoint into torch's hub layout under ``out/torch``."""
    import torch.hub

    path = out / TORCH_HOME_NAME / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    rel = path.relative_to(out).as_posix()
    if path.is_file():
        say(f"backbone: {path.name} already in {path.parent}; skipped")
        return Fetched("backbone", url, path, path.name, {rel: path.stat().st_size}, skipped=True)
    say(f"backbone: {url} → {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except OSError as err:  # urllib's URLError too
        reason = getattr(err, "reason", None) or err
        raise HubUnreachableError(
            f"backbone weights {url}: download failed: a network problem ({reason}); check the "
            "connection and run `zodi models download` again"
        ) from None
    return Fetched("backbone", url, path, path.name, {rel: path.stat().st_size})


def download_models(
    out: str | Path,
    models: ModelsConfig | None = None,
    mmseg_configs: tuple[str, ...] | None = None,
    variant: Variant = "fp16",
    say: Callable[[str], None] = print,
    timeout: float = NETWORK_TIMEOUT,
) -> DownloadedModels:
    """Fetch Stable Diffusion 1.5, the segmentation ControlNet and the backbone weights into ``out``.

    ``mmseg_configs``: whose backbone weights to fetch (() for none). The hub out of reach, a
    complete folder is kept, else HubUnreachableError comes within seconds.
    """
    models = models or ModelsConfig()
    if mmseg_configs is None:
        mmseg_configs = (TrainConfig().mmseg_config,)
    for field_name, name in (("base", models.base), ("controlnet", models.controlnet)):
        if name is None or is_local(name) or name.count("/") != 1:
            raise ValueError(
                f"models.{field_name}: expected a hub id (owner/name) to download, "
                f"received {name!r}"
            )

    out = Path(out).expanduser().resolve()
    urls = [url for config in mmseg_configs for url in backbone_weights_urls(config)]
    try:
        record = json.loads((out / RECORD_NAME).read_text())
    except (OSError, ValueError):
        record = {}
    base, controlnet = model_sources(models)
    fetched = [
        _snapshot("base", base, out, variant, record, say, timeout),
        _snapshot("controlnet", controlnet, out / "controlnet", variant, record, say, timeout),
    ]
    fetched += [_fetch_weights(url, out, say) for url in dict.fromkeys(urls)]
    requested = {"base": models.revision, "controlnet": models.controlnet_revision}
    record = {
        (f.name if f.name != "backbone" else f"backbone:{f.path.name}"): {
            "source": f.source,
            "requested": requested.get(f.name),
            "revision": f.revision,
            "variant": variant if f.name in requested else None,
            "path": f.path.relative_to(out).as_posix() or ".",
            "files": f.files,
        }
        for f in fetched
    }
    (out / RECORD_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return DownloadedModels(out, fetched)
