"""The model hub: whether a hub id can be loaded here, and fetching every model into one folder.

GPU workers of many clusters have no internet. This module decides, in seconds, whether a hub id
can be loaded (cached, reachable, or neither: a one-line network error that says how to use a
local folder instead), and :func:`download_models` fetches what a run needs, on a machine with
internet, into one folder that ``--models DIR`` and the pipeline config accept as is::

    DIR/
      model_index.json unet/ vae/ text_encoder/ tokenizer/ scheduler/   Stable Diffusion 1.5
      controlnet/                                                        the segmentation ControlNet
      torch/hub/checkpoints/<file>.pth                                   backbone ImageNet weights
      zodi-models.json                                                   what was fetched, from where

The diffusers folders come down with huggingface_hub's ``snapshot_download`` (``allow_patterns``
built from the files the loader needs, so only one weights variant comes down, not every
checkpoint of the repository); the backbone weights with ``torch.hub.download_url_to_file`` from
the URL mmengine resolves for the mmseg config. They sit where torch's hub cache puts them, so
training finds them offline with ``TORCH_HOME=DIR/torch`` (or ``--pretrained DIR/torch/hub/
checkpoints/<file>.pth``).

The ``fp16`` variant (half the download; what the GPU transfer runs in) is stored under the
standard weights names, so every loader finds it without a variant argument; the weights load
into whatever dtype the run asks for (float32 on CPU). A repository without the fp16 file of a
component gives its standard weights file instead.

Nothing here imports Prefect; torch and mmengine are imported only to fetch backbone weights.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from zodi_core.config import ModelsConfig, TrainConfig

#: Seconds to wait for the model hub before calling it unreachable.
NETWORK_TIMEOUT = 5.0

#: The record of what :func:`download_models` fetched, at the root of the folder.
RECORD_NAME = "zodi-models.json"

#: Where the backbone weights go inside the folder: torch's hub layout under ``TORCH_HOME``.
TORCH_HOME_NAME = "torch"

Variant = Literal["fp16", "fp32"]


class HubUnreachableError(ConnectionError):
    """The model hub did not answer (a network problem); the message says how to work offline."""


# 1. Can a hub id be loaded here? -------------------------------------------------------------


@dataclass(frozen=True)
class HubCheck:
    """What is known about one hub id here: cached, offline mode, the hub's answer."""

    cached: bool
    offline: bool  # HF_HUB_OFFLINE is set
    status: int | None = None  # HTTP status of the hub; None when not asked or unreachable
    error: str | None = None  # why the hub could not be reached (a network problem)


def check_hub(
    repo_id: str,
    revision: str | None = None,
    filename: str = "config.json",
    timeout: float = NETWORK_TIMEOUT,
    probe_when_cached: bool = False,
) -> HubCheck:
    """Look ``repo_id`` up in the local hub cache and (unless cached, or offline) ask the hub.

    The hub is asked with one HEAD request of its model API, ``timeout`` seconds at most (no
    retries): a machine without internet learns it at once instead of after ~30 s of retries.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)
    offline = bool(constants.HF_HUB_OFFLINE)
    if offline or (cached and not probe_when_cached):
        return HubCheck(cached, offline)
    url = f"{constants.ENDPOINT.rstrip('/')}/api/models/{repo_id}"
    if revision:
        url += f"/revision/{revision}"
    request = urllib.request.Request(url, method="HEAD")
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HubCheck(cached, offline, status=response.status)
    except urllib.error.HTTPError as err:
        return HubCheck(cached, offline, status=err.code)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or type(err).__name__
        return HubCheck(cached, offline, error=f"unreachable within {timeout:g} s ({reason})")


def offline_remedy(repo_id: str, field: str) -> str:
    """How to get ``repo_id`` onto a machine without internet, for the setting ``field``."""
    if field.endswith("base"):
        return (
            "on a machine with internet run `zodi models download --out DIR`, copy DIR here and "
            f"pass --models DIR (config: {field}: DIR; or `hf download {repo_id} --local-dir DIR`)"
        )
    if field.endswith("controlnet"):
        return (
            "on a machine with internet run `zodi models download --out DIR`, copy DIR here and "
            f"pass --controlnet DIR/controlnet (config: {field}: DIR/controlnet; or `hf download "
            f"{repo_id} --local-dir DIR`)"
        )
    return (
        f"on a machine with internet run `hf download {repo_id} --local-dir DIR`, copy DIR here "
        f"and set {field} to DIR"
    )


def describe_hub_check(
    check: HubCheck, repo_id: str, revision: str | None, field: str
) -> str | None:
    """The one-line problem of a :class:`HubCheck` (None: loadable), naming ``field``."""
    from huggingface_hub import constants

    if check.cached:  # whatever the hub says, the files are here
        return None
    how = offline_remedy(repo_id, field)
    if check.offline:
        return f"{field}: hub id {repo_id!r} is not in the local cache and HF_HUB_OFFLINE is set; {how}"
    if check.error:
        return (
            f"{field}: hub id {repo_id!r} not cached and the hub ({constants.ENDPOINT}) is "
            f"{check.error}: a network problem; {how}; or, with the files in the hub cache, "
            "set HF_HUB_OFFLINE=1"
        )
    status = check.status or 200
    if status in (401, 403):
        return (
            f"{field}: hub id {repo_id!r} refused access (HTTP {status}): "
            "accept its licence on the hub and log in (`hf auth login` or HF_TOKEN)"
        )
    if status == 404:
        return (
            f"{field}: hub id {repo_id!r} (revision {revision or 'main'}) not found on the hub; "
            "check the spelling"
        )
    if status >= 400:
        return f"{field}: hub id {repo_id!r}: the hub answered HTTP {status}; retry later or {how}"
    return None


def hub_problem(
    repo_id: str,
    revision: str | None,
    filename: str,
    field: str,
    timeout: float = NETWORK_TIMEOUT,
) -> str | None:
    """None when ``repo_id`` is cached or reachable on the hub; else the problem, one line."""
    check = check_hub(repo_id, revision, filename, timeout)
    return describe_hub_check(check, repo_id, revision, field)


def require_hub(
    repo_id: str,
    revision: str | None,
    filename: str,
    field: str,
    timeout: float = NETWORK_TIMEOUT,
) -> bool:
    """Before loading ``repo_id`` from the hub: True when it must load from the cache only.

    The hub is asked even when the files are cached, so that an unreachable hub means "load from
    the cache" at once (``local_files_only``) instead of a retried request per file. Raises
    :class:`HubUnreachableError` (a network problem, nothing cached), ``PermissionError`` (access
    refused) or ``FileNotFoundError`` (no such repository; offline and not cached), one line each.
    """
    check = check_hub(repo_id, revision, filename, timeout, probe_when_cached=True)
    problem = describe_hub_check(check, repo_id, revision, field)
    if problem is None:  # cached, or the hub answers: from the cache only unless it answers well
        return check.offline or (
            check.cached and (check.error is not None or (check.status or 200) >= 400)
        )
    _raise_problem(check, problem)


def _unreachable(check: HubCheck) -> bool:
    """The hub did not answer, or answered with a server error (both may pass)."""
    return check.error is not None or (check.status or 0) >= 500


def _raise_problem(check: HubCheck, problem: str) -> NoReturn:
    """Raise ``problem`` as the kind it is: network (may pass), access refused, not found."""
    if _unreachable(check):
        raise HubUnreachableError(problem)
    if check.status in (401, 403):
        raise PermissionError(problem)
    raise FileNotFoundError(problem)


def is_network_error(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) is a failed connection to a server.

    The hub client's transport errors (``httpx2``/``httpx``: refused, timed out, reset), the
    standard library's connection and timeout errors, urllib's failures to connect.
    """
    transport: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    for module in ("httpx2", "httpx", "requests"):  # hub client of huggingface_hub 2.x / 1.x / 0.x
        try:
            lib = importlib.import_module(module)
        except ImportError:
            continue
        transport += (getattr(lib, "TransportError", None) or lib.ConnectionError,)
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, transport):
            return True
        if isinstance(current, urllib.error.URLError) and not isinstance(
            current, urllib.error.HTTPError
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


# 2. What a run needs ---------------------------------------------------------------------------


def _with_variant(name: str, variant: Variant) -> str:
    """``diffusion_pytorch_model.safetensors`` → ``diffusion_pytorch_model.fp16.safetensors``
    (diffusers' and transformers' variant naming); fp32 is the unnamed default."""
    if variant == "fp32":
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{variant}{dot}{ext}"


def allow_patterns(needs: dict[str, tuple[tuple[str, ...], ...]], variant: Variant) -> list[str]:
    """The repository files the loader needs (``needs``: subfolder → groups of alternatives, as
    :data:`~zodi_core.transfer.models.BASE_SUBFOLDERS`): per group its first alternative
    (safetensors before ``.bin``), weights in ``variant``; the tokenizer folder whole (its
    merges and special tokens are small and all needed)."""
    patterns = []
    for sub, groups in needs.items():
        prefix = f"{sub}/" if sub else ""
        if sub == "tokenizer":
            patterns.append(f"{prefix}*")
            continue
        for group in groups:
            name = group[0]
            patterns.append(
                prefix + (_with_variant(name, variant) if name.endswith(".safetensors") else name)
            )
    return patterns


def base_patterns(variant: Variant) -> list[str]:
    """Files of the Stable Diffusion repository a run needs (model_index.json and the loader's)."""
    from zodi_core.transfer.models import BASE_SUBFOLDERS

    return ["model_index.json", *allow_patterns(BASE_SUBFOLDERS, variant)]


def controlnet_patterns(variant: Variant) -> list[str]:
    """Files of the ControlNet repository a run needs."""
    from zodi_core.transfer.models import CONTROLNET_FILES

    return allow_patterns({"": CONTROLNET_FILES}, variant)


def backbone_weights_urls(mmseg_config: str) -> list[str]:
    """Download URLs of the ImageNet weights ``mmseg_config`` initialises its backbone from.

    The references are the ones training resolves (``pretrained``, ``backbone.init_cfg``),
    ``open-mmlab://`` names through mmengine's own table; a config without any gives [].
    """
    from zodi_core.seg.train import _http_url, _weights_refs, load_config

    urls = []
    for _, _, ref in _weights_refs(load_config(mmseg_config)):
        url = _http_url(ref)
        if url is None:
            raise ValueError(
                f"--mmseg-config {mmseg_config}: backbone weights {ref!r} are not a download URL "
                "(a local file needs no download)"
            )
        urls.append(url)
    return list(dict.fromkeys(urls))


# 3. Download -----------------------------------------------------------------------------------


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

    @property
    def backbones(self) -> list[Path]:
        return [f.path for f in self.fetched if f.name == "backbone"]

    def usage(self) -> list[str]:
        """The lines to use the folder with: command line, pipeline config, training."""
        out = str(self.out)
        lines = [
            f"zodi transfer ... --models {out}",
            f"zodi pipeline --config C --models {out}",
            f"config: transfer.models: {{base: {out}, controlnet: {out}/controlnet}}",
        ]
        if self.backbones:
            lines.append(
                f"training (backbone weights): TORCH_HOME={out}/{TORCH_HOME_NAME}, or "
                f"--pretrained / train.pretrained: {self.backbones[0]}"
            )
        return lines

    def summary(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "total_bytes": self.total_size,
            "fetched": [
                {
                    "name": f.name,
                    "source": f.source,
                    "revision": f.revision,
                    "path": str(f.path),
                    "files": len(f.files),
                    "bytes": f.size,
                    "skipped": f.skipped,
                }
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


def _component_files(name: str, root: Path) -> dict[str, int]:
    """Files (relative path → bytes) of one component's folder; the base folder without the
    ControlNet, backbone weights and record that share it."""
    others = (
        ("controlnet", TORCH_HOME_NAME, RECORD_NAME, ".cache") if name == "base" else (".cache",)
    )
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in others
    }


def _read_record(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}


def _hub_error(err: BaseException, repo_id: str, field: str) -> BaseException:
    """A one-line error for a failed snapshot download (network, access, missing repository)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return PermissionError(
            f"{field}: hub id {repo_id!r} is gated: accept its licence on the hub and log in "
            "(`hf auth login` or HF_TOKEN)"
        )
    if isinstance(err, (RepositoryNotFoundError, RevisionNotFoundError)):
        return FileNotFoundError(f"{field}: hub id {repo_id!r}: {str(err).splitlines()[0]}")
    if is_network_error(err) or "internet connection" in str(err):
        return HubUnreachableError(
            f"{field}: downloading {repo_id!r} from {constants.ENDPOINT} failed: a network problem "
            f"({' '.join(str(err).split())[:160]}); check the connection (HF_ENDPOINT, proxy) "
            "and run `zodi models download` again: it resumes"
        )
    return err


def _quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn`` with huggingface_hub's progress bars off (the dry run's bar says nothing)."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        return fn(*args, **kwargs)
    finally:
        if not was_disabled:
            enable_progress_bars()


def _snapshot(
    name: str,
    repo_id: str,
    revision: str | None,
    patterns: list[str],
    dest: Path,
    needs: dict[str, tuple[tuple[str, ...], ...]],
    variant: Variant,
    record: dict[str, Any],
    say: Callable[[str], None],
    timeout: float,
) -> Fetched:
    """Fetch ``patterns`` of ``repo_id`` into ``dest`` with ``snapshot_download``; check it."""
    from huggingface_hub import constants, snapshot_download

    from zodi_core.transfer.models import _check_folder

    field = f"models.{name}"
    previous = record.get(name, {})
    same = (previous.get("source"), previous.get("requested"), previous.get("variant")) == (
        repo_id,
        revision,
        variant,
    )
    if same:
        try:
            _check_folder(dest, needs, field)
        except FileNotFoundError:
            pass  # incomplete: fetch again (snapshot_download resumes)
        else:
            say(f"{name}: {repo_id}@{previous['revision'][:12]} already in {dest}; skipped")
            files = _component_files(name, dest)
            return Fetched(name, repo_id, dest, previous["revision"], files, skipped=True)
    if constants.HF_HUB_OFFLINE:
        raise HubUnreachableError(
            f"{field}: cannot download {repo_id!r}: HF_HUB_OFFLINE is set; run `zodi models "
            "download` on a machine with internet (HF_HUB_OFFLINE unset), then copy the folder"
        )
    check = check_hub(repo_id, revision, "config.json", timeout, probe_when_cached=True)
    if _unreachable(check) or (check.status or 0) >= 400:
        if check.error is not None:
            problem = (
                f"{field}: cannot download {repo_id!r}: the hub ({constants.ENDPOINT}) is "
                f"{check.error}: a network problem; run `zodi models download` on a machine with "
                "internet (check HF_ENDPOINT and proxy settings), copy the folder here and pass "
                "--models DIR; or set HF_HUB_OFFLINE=1 to load from the hub cache"
            )
        else:  # an answer of the hub: access refused, no such repository, server error
            problem = describe_hub_check(HubCheck(False, False, check.status), repo_id, revision,
                                         field)  # fmt: skip
        _raise_problem(check, problem or f"{field}: hub id {repo_id!r}: HTTP {check.status}")
    kwargs: dict[str, Any] = {"revision": revision, "allow_patterns": patterns, "local_dir": dest}
    try:
        plan = _quietly(snapshot_download, repo_id, dry_run=True, **kwargs)
        planned = {f.filename for f in plan}
        missing = [p for p in patterns if f".{variant}." in p and p not in planned]
        if missing:
            # Not every repository holds every weights file in the variant: the standard one then.
            say(f"{name}: {repo_id} has no {variant} variant of {', '.join(missing)}; "
                "fetching the standard weights instead")  # fmt: skip
            patterns = [p for p in patterns if p not in missing]
            patterns += [p.replace(f".{variant}.", ".") for p in missing]
            kwargs["allow_patterns"] = patterns
            plan = _quietly(snapshot_download, repo_id, dry_run=True, **kwargs)
        if not plan:
            raise FileNotFoundError(
                f"{field}: hub id {repo_id!r} has none of the files {patterns}; "
                "is it a diffusers repository?"
            )
        commit = plan[0].commit_hash
        total = sum(p.file_size or 0 for p in plan)
        todo = sum(p.file_size or 0 for p in plan if p.will_download)
        say(
            f"{name}: {repo_id}@{commit[:12]}: {len(plan)} files, {format_size(total)} "
            f"({format_size(todo)} to fetch) → {dest}"
        )
        snapshot_download(repo_id, **{**kwargs, "revision": commit})
    except Exception as err:  # noqa: BLE001 - converted to one line, or re-raised as is
        converted = _hub_error(err, repo_id, field)
        if converted is err:
            raise
        raise converted from None
    if variant != "fp32":
        # The loader reads the standard names: the variant's weights take them.
        for p in plan:
            got = dest / p.filename
            standard = got.with_name(got.name.replace(f".{variant}.", "."))
            if got.is_file() and standard != got:
                os.replace(got, standard)
    try:
        _check_folder(dest, needs, field)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (not in the hub repository {repo_id!r})") from None
    shutil.rmtree(dest / ".cache" / "huggingface", ignore_errors=True)
    if (dest / ".cache").is_dir() and not any((dest / ".cache").iterdir()):
        (dest / ".cache").rmdir()
    return Fetched(name, repo_id, dest, commit, _component_files(name, dest))


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
    except (urllib.error.URLError, OSError) as err:
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

    Args:
        out: the folder (created); ``--models out`` loads from it.
        models: hub ids and revisions (default: :class:`~zodi_core.config.ModelsConfig`'s).
        mmseg_configs: segmentation configs whose ImageNet backbone weights to fetch (default:
            :class:`~zodi_core.config.TrainConfig`'s ``mmseg_config``; () for none).
        variant: weights variant of the diffusers models ("fp16": half the download).
        say: where progress lines go.
        timeout: seconds to wait for the hub before calling it unreachable.

    Rerunning skips what is complete and resumes what is not. Raises
    :class:`HubUnreachableError` within seconds when the hub cannot be reached.
    """
    models = models or ModelsConfig()
    if mmseg_configs is None:
        mmseg_configs = (TrainConfig().mmseg_config,)
    if models.controlnet is None:
        raise ValueError(
            "models.controlnet: expected a hub id of the segmentation ControlNet, received None"
        )
    from zodi_core.transfer.models import BASE_SUBFOLDERS, CONTROLNET_FILES, _is_local

    for field_name, source in (("base", models.base), ("controlnet", models.controlnet)):
        if _is_local(source) or source.count("/") != 1:
            raise ValueError(
                f"models.{field_name}: expected a hub id (owner/name) to download, "
                f"received {source!r}"
            )

    out = Path(out).expanduser().resolve()
    urls = [url for config in mmseg_configs for url in backbone_weights_urls(config)]
    record = _read_record(out)
    fetched = [
        _snapshot("base", models.base, models.revision, base_patterns(variant), out,
                  BASE_SUBFOLDERS, variant, record, say, timeout),
        _snapshot("controlnet", models.controlnet, models.controlnet_revision,
                  controlnet_patterns(variant), out / "controlnet", {"": CONTROLNET_FILES},
                  variant, record, say, timeout),
    ]  # fmt: skip
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
