"""Where the diffusion models come from: a local folder or a hub id, what they are, what is wrong.

The one owner (loading, download, preflight and the CLI ask here) of local folder or hub id,
the ``<base>/controlnet`` rule, the files a loader needs, identity (a folder's content digest or
the commit a hub revision resolves to) and the hub's answer as one actionable line. A leaf: it
imports nothing of zodi_core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol


class ModelsConfig(Protocol):
    """What this leaf module reads of :class:`zodi_core.config.ModelsConfig` (no import: the
    config imports this module)."""

    base: str
    controlnet: str | None
    revision: str | None
    controlnet_revision: str | None


#: Seconds to wait for the model hub before calling it unreachable.
NETWORK_TIMEOUT = 5.0

Needs = dict[str, tuple[tuple[str, ...], ...]]  # subfolder → file groups (any one of a group)
_DIFFUSERS_WEIGHTS = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.safetensors",  # a folder of the fp16 variant only
)
#: Subfolders of a diffusers Stable Diffusion folder the sampler needs, and the files in each
#: (any one of a tuple suffices; the first is the one a download fetches).
BASE_SUBFOLDERS: Needs = {
    "unet": (("config.json",), _DIFFUSERS_WEIGHTS),
    "vae": (("config.json",), _DIFFUSERS_WEIGHTS),
    "text_encoder": (
        ("config.json",),
        ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors"),
    ),
    "tokenizer": (("tokenizer_config.json",), ("vocab.json", "tokenizer.json")),
    "scheduler": (("scheduler_config.json",),),
}
CONTROLNET_FILES: Needs = {"": (("config.json",), _DIFFUSERS_WEIGHTS)}


class HubUnreachableError(ConnectionError):
    """The model hub did not answer (a network problem); the message says how to work offline,
    ``reason`` what happened ("unreachable within 5 s (ConnectError)", "HTTP 503")."""

    def __init__(self, message: str, reason: str = "unreachable") -> None:
        super().__init__(message)
        self.reason = reason


# 1. Local folder or hub id ------------------------------------------------------------------


def is_local(source: str, base: str | Path | None = None) -> bool:
    """Whether ``source`` names a local folder rather than a hub id (``owner/name``): it starts
    with ``.``, ``/`` or ``~``, or exists (under ``base`` when given, else the current folder)."""
    return source.startswith((".", "/", "~")) or (Path(base or ".") / source).exists()


@dataclass(frozen=True)
class ModelSource:
    """One model to load: a local folder, or a hub id (with a subfolder and a revision)."""

    field: str  # the setting it comes from, for messages ("models.base")
    source: str  # hub id, or the folder (``~`` expanded)
    local: bool
    revision: str | None = None  # the hub revision asked for (None: main)
    subfolder: str | None = None  # "controlnet" for <base>/controlnet on the hub
    needs: Needs = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, field: str, value: str, needs: Needs, revision: str | None = None) -> ModelSource:
        """The model a setting names: a local folder (``~`` expanded) or a hub id."""
        local = is_local(value)
        return cls(
            field, str(Path(value).expanduser()) if local else value, local, revision, None, needs
        )

    @property
    def path(self) -> Path:
        """The local folder holding the model (the subfolder included)."""
        return Path(self.source) / (self.subfolder or "")

    @property
    def name(self) -> str:
        """How lineage names it: the folder, or ``id`` / ``id/subfolder``."""
        if self.local:
            return str(self.path)
        return f"{self.source}/{self.subfolder}" if self.subfolder else self.source


def holds_controlnet(base: str) -> bool:
    """Whether the local folder ``base`` holds its own ControlNet (``<base>/controlnet``, as
    ``zodi tiny-models``, ``zodi pocket-models`` and ``zodi models download`` write it)."""
    return is_local(base) and (Path(base).expanduser() / "controlnet").is_dir()


def model_sources(models: ModelsConfig) -> tuple[ModelSource, ModelSource]:
    """The base model and the ControlNet of ``models``: a ControlNet of None is the base's
    ``controlnet`` subfolder (a local ``<base>/controlnet`` or the hub repository's)."""
    base = ModelSource.of("models.base", models.base, BASE_SUBFOLDERS, models.revision)
    if models.controlnet is None:
        field = "models.controlnet (<base>/controlnet)"
        return base, replace(base, field=field, subfolder="controlnet", needs=CONTROLNET_FILES)
    return base, ModelSource.of(
        "models.controlnet", models.controlnet, CONTROLNET_FILES, models.controlnet_revision
    )


def folder_problem(root: Path, needs: Needs, what: str) -> str | None:
    """The one-line problem of a local model folder: missing, or every missing subfolder/file
    (before diffusers' own error); None: it holds what the loader needs."""
    if not root.is_dir():
        return f"{what}: model folder {str(root)!r} does not exist"
    missing = []
    for sub, groups in needs.items():
        if not (root / sub).is_dir():
            missing.append(f"{sub}/")
            continue
        missing += [
            "/".join(p for p in (sub, " or ".join(group)) if p)
            for group in groups
            if not any((root / sub / name).is_file() for name in group)
        ]
    if missing:
        return f"{what}: model folder {str(root)!r} is incomplete; missing: {', '.join(missing)}"
    return None


def with_variant(name: str, variant: str | None) -> str:
    """``diffusion_pytorch_model.safetensors`` → ``diffusion_pytorch_model.fp16.safetensors``
    (diffusers' and transformers' variant naming); None is the unnamed default."""
    if not variant or variant == "fp32":
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{variant}{dot}{ext}"


def weights_variant(
    source: ModelSource, sub: str | None, hub: HubModel | None, half: bool
) -> str | None:
    """``"fp16"`` when one component's fp16 weights variant is the one to load: in float16
    where the model has it, and whenever it is the only weights file; else None. ``sub``: the
    component's subfolder (on the hub its repository path); ``hub``: the resolved hub id
    (None: a local folder)."""
    groups = source.needs.get(sub or "") or source.needs.get("", ())
    weights = next((g for g in groups if g[0].endswith(".safetensors")), None)
    if weights is None:
        return None

    def exists(name: str) -> bool:
        if hub is None:
            return (source.path / (sub or "") / name).is_file()
        rel = f"{sub}/{name}" if sub else name
        if hub.files is not None:
            return rel in hub.files
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(source.source, rel, revision=hub.commit), str)

    half_name = with_variant(weights[0], "fp16")
    standard = [n for n in weights if n != half_name]
    return "fp16" if exists(half_name) and (half or not any(map(exists, standard))) else None


# 2. Content digest of a local folder ----------------------------------------------------------

#: File hashes known to this process: file state → SHA-256 (in front of the disk cache).
_KNOWN: dict[tuple[str, int, int, int, int, int], str] = {}


def hash_file(path: Path) -> str:
    """SHA-256 of a file's bytes (the one place that reads weights)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of ``path``'s bytes, hashed once per file state (path, size, mtime, ctime,
    inode, device: any write changes ctime), remembered in this process and on disk
    (``$XDG_CACHE_HOME/zodi/file-sha256``, ``~/.cache`` by default; one file per path, replaced
    atomically; unwritable: re-hashed)."""
    st = path.stat()
    state = (str(path.absolute()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    if state in _KNOWN:
        return _KNOWN[state]
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zodi" / "file-sha256"
    )
    entry = cache / (hashlib.sha256(state[0].encode()).hexdigest() + ".json")
    record = {}  # not remembered (or unreadable): hash it
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(entry.read_text())
    if record.get("state") != list(state) or len(record.get("sha256", "")) != 64:
        record = {"state": list(state), "sha256": hash_file(path)}
        with contextlib.suppress(OSError):  # a read-only home: remembered in this process only
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=cache, delete=False, suffix=".tmp") as f:
                json.dump(record, f)
            os.replace(f.name, entry)
    _KNOWN[state] = record["sha256"]
    return record["sha256"]


def folder_digest(root: Path, subfolders: Iterable[str] | None = None) -> str:
    """Content digest of a local model folder: SHA-256 over each file's path and
    :func:`file_sha256`; ``subfolders``: only these (the base's unet/, vae/, ..., not a
    ``controlnet/`` beside them), None: every file; hidden folders aside."""
    tops = [root] if subfolders is None else [root / s for s in subfolders]
    files = {top for top in tops if top.is_file()}
    files |= {p for top in tops if top.is_dir() for p in top.rglob("*") if p.is_file()}
    h = hashlib.sha256()
    for path in sorted(files):
        rel = path.relative_to(root)
        if not any(part.startswith(".") for part in rel.parts):
            h.update(rel.as_posix().encode() + b"\0")
            h.update(file_sha256(path).encode() + b"\n")
    return h.hexdigest()[:16]


# 3. The hub ----------------------------------------------------------------------------------


def offline_remedy(repo_id: str, field: str) -> str:
    """How to get ``repo_id`` onto a machine without internet, for the setting ``field``."""
    hf = f"`hf download {repo_id} --local-dir DIR`"
    if not field.endswith("base") and "controlnet" not in field:
        return f"on a machine with internet run {hf}, copy DIR here and set {field} to DIR"
    flag, folder = (
        ("--models", "DIR") if field.endswith("base") else ("--controlnet", "DIR/controlnet")
    )
    return (
        "on a machine with internet run `zodi models download --out DIR`, copy DIR here and "
        f"pass {flag} {folder} (config: {field.split(' ')[0]}: {folder}; or {hf})"
    )


def is_network_error(err: BaseException | None) -> bool:
    """Whether ``err`` (or an exception it was raised from) is a failed connection to a server:
    the hub client's (httpx2) transport errors, the standard library's connection and timeout
    errors."""
    import httpx2

    seen = []
    while err is not None and err not in seen:
        if isinstance(err, (ConnectionError, TimeoutError, httpx2.TransportError)):
            return True
        seen.append(err)
        err = err.__cause__ or err.__context__
    return False


@dataclass(frozen=True)
class HubModel:
    """A hub id resolved: the commit its revision names, and whether to load from the cache only."""

    commit: str
    cached_only: bool  # the hub did not answer (or offline mode): the cache has the files
    files: frozenset[str] | None = None  # the repository's files at the commit (None: unknown)


#: Hub answers of this process: (endpoint, repo, revision) → HubModel. A process resolves a
#: revision once, so every shard's fingerprint and the weights it loads name one commit.
_RESOLVED: dict[tuple[str, str, str | None], HubModel] = {}


def resolve_hub(
    source: ModelSource, timeout: float = NETWORK_TIMEOUT, fresh: bool = False
) -> HubModel:
    """The commit ``source.revision`` (None: main) of the hub id names, asked once per process
    (``fresh``: again) with ``HfApi().model_info(..., timeout=)``. When the hub cannot answer or
    refuses while the files are cached, the cache's commit is used and loading reads the cache.

    Raises HubUnreachableError (nothing cached), PermissionError (gated) or FileNotFoundError.
    """
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import REGEX_COMMIT_HASH

    repo, revision, field = source.source, source.revision, source.field
    key = (constants.ENDPOINT, repo, revision)
    if key in _RESOLVED and not fresh:
        return _RESOLVED[key]
    sub, groups = next(iter(source.needs.items()))  # a file every load reads
    probe = "/".join(p for p in (source.subfolder, sub, groups[0][0]) if p)
    path = try_to_load_from_cache(repo, probe, revision=revision)
    parts = Path(path).parts if isinstance(path, str) else ()
    cached = parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    if revision and REGEX_COMMIT_HASH.fullmatch(revision):
        resolved = HubModel(revision, cached_only=cached == revision)
    elif constants.HF_HUB_OFFLINE:
        if cached is None:
            raise FileNotFoundError(
                f"{field}: hub id {repo!r} is not in the local cache and HF_HUB_OFFLINE is set; "
                + offline_remedy(repo, field)
            )
        resolved = HubModel(cached, cached_only=True)
    else:
        try:
            info = HfApi().model_info(repo, revision=revision, timeout=timeout)
        except Exception as err:  # noqa: BLE001 - sorted into the kinds below, or re-raised
            usable = isinstance(err, (HfHubHTTPError, OSError)) or is_network_error(err)
            if cached is None or not usable:
                raise _hub_error(err, repo, revision, field, timeout) from None
            resolved = HubModel(cached, cached_only=True)  # the files are here: use them
        else:
            files = frozenset(s.rfilename for s in info.siblings or ())
            resolved = HubModel(info.sha, cached_only=False, files=files or None)
    _RESOLVED[key] = resolved
    return resolved


def _hub_error(
    err: BaseException, repo: str, revision: str | None, field: str, timeout: float
) -> BaseException:
    """The one-line error of a failed hub question: network, refused, not found, server."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, RevisionNotFoundError):
        setting = field.split(" ")[0].rsplit(".", 1)[0] + (
            ".controlnet_revision" if field.endswith(".controlnet") else ".revision"
        )
        return FileNotFoundError(
            f"{field}: hub id {repo!r} has no revision {revision!r}; fix {setting} (a branch, "
            "tag or commit of the repository; None: main)"
        )
    gated = isinstance(err, GatedRepoError)
    if isinstance(err, RepositoryNotFoundError) and not gated:  # also private, no token (401)
        return FileNotFoundError(
            f"{field}: hub id {repo!r} (revision {revision or 'main'}) not found on the hub; "
            "check the spelling (a private repository: log in with `hf auth login` or HF_TOKEN)"
        )
    http = isinstance(err, HfHubHTTPError)
    status = getattr(getattr(err, "response", None), "status_code", None) if http else None
    if gated or status in (401, 403):
        return PermissionError(
            f"{field}: hub id {repo!r} refused access ({'gated' if gated else f'HTTP {status}'}): "
            "accept its licence on the hub and log in (`hf auth login` or HF_TOKEN)"
        )
    how = offline_remedy(repo, field)
    if status is not None and status < 500:
        return FileNotFoundError(f"{field}: hub id {repo!r}: the hub answered HTTP {status}; {how}")
    if not (http or is_network_error(err)):
        return err
    what = " ".join(str(err).split())[:120]
    reason = f"answering HTTP {status}" if status else f"unreachable within {timeout:g} s ({what})"
    return HubUnreachableError(
        f"{field}: hub id {repo!r} not cached and the hub ({constants.ENDPOINT}) is {reason}: "
        f"a network problem; {how}; or, with the files in the hub cache, set HF_HUB_OFFLINE=1",
        reason,
    )


def source_problem(source: ModelSource, timeout: float = NETWORK_TIMEOUT) -> str | None:
    """None when the model can be loaded here (a complete folder; a hub id cached, or the hub
    answers); else one line."""
    if source.local:
        return folder_problem(source.path, source.needs, source.field)
    try:
        resolve_hub(source, timeout)
    except (HubUnreachableError, PermissionError, FileNotFoundError) as err:
        return str(err)
    return None


def model_problems(
    models: ModelsConfig, prefix: str = "", timeout: float = NETWORK_TIMEOUT
) -> list[str]:
    """Every problem of the diffusion models (incomplete folders, hub ids that cannot be loaded
    here), one line each, fields named with ``prefix`` (e.g. ``transfer.``)."""
    base, controlnet = model_sources(models)
    # <base>/controlnet is the base's hub repository (asked for the base) or missing folder (said)
    inside = controlnet.subfolder and not (controlnet.local and base.path.is_dir())
    sources = (base,) if inside else (base, controlnet)
    named = (replace(s, field=prefix + s.field) for s in sources)
    return [p for p in (source_problem(s, timeout) for s in named) if p]


# 4. Identity ---------------------------------------------------------------------------------


def source_identity(source: ModelSource, timeout: float = NETWORK_TIMEOUT) -> str:
    """``<folder>@local:<content digest>`` or ``<hub id>@<commit>``: what lineage records;
    ``<hub id>@<revision>:unresolved`` when it cannot be resolved here (loading then fails with
    the reason, so no stored image is ever taken for its output)."""
    if source.local:
        subfolders = None if source.subfolder or source.field != "models.base" else BASE_SUBFOLDERS
        return f"{source.name}@local:{folder_digest(source.path, subfolders)}"
    try:
        return f"{source.name}@{resolve_hub(source, timeout).commit}"
    except (HubUnreachableError, PermissionError, FileNotFoundError):
        return f"{source.name}@{source.revision or 'main'}:unresolved"


def models_fingerprint(models: ModelsConfig, timeout: float = NETWORK_TIMEOUT) -> str:
    """Identity of the diffusion models: each one's :func:`source_identity`, comma-joined (new
    weights in a folder or a moved hub revision change it; an unchanged folder costs a stat)."""
    return ",".join(source_identity(s, timeout) for s in model_sources(models))
