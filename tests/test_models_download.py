"""`zodi models download` against a real HTTP server that speaks the hub's protocol, and the fast
failure of an unreachable hub (a closed local port, for real).

No internet here: :class:`FakeHub` serves, on 127.0.0.1, the model API (repository info, file
tree), the ``resolve`` downloads (HEAD for metadata, GET for content) and plain files (the
backbone weights' URL), from folders built out of the tiny models. huggingface_hub's own
``snapshot_download`` and torch's ``download_url_to_file`` talk to it unmodified; the server logs
every request, so the tests see which files came down.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
import transformers.utils.hub
from torch.testing import assert_close

from zodi_cli import main
from zodi_core import model_source
from zodi_core.config import ModelsConfig
from zodi_core.hub import RECORD_NAME, allow_patterns, base_patterns, download_models
from zodi_core.model_source import (
    CONTROLNET_FILES,
    HubUnreachableError,
    model_problems,
    models_fingerprint,
)
from zodi_core.seg.train import CONFIG_DIR, load_config, resolve_pretrained
from zodi_core.transfer.models import load_components

SHA = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "89abcdef0123456789abcdef0123456789abcdef"
BASE_ID, CONTROLNET_ID = "fake/sd15", "fake/control-seg"
BACKBONE = "tiny-backbone-0123abcd.pth"


class FakeHub:
    """The hub's HTTP protocol over folders: ``repos`` maps a repository id to its folder."""

    def __init__(self, repos: dict[str, Path], files: dict[str, Path]) -> None:
        self.repos, self.files = repos, files
        self.sha = SHA  # the commit every revision names (a test moves it)
        self.gated: set[str] = set()  # repositories whose licence is not accepted (HTTP 403)
        self.requests: list[tuple[str, str]] = []
        self.tokens: list[str | None] = []  # the authorization header of each model API call
        self.file_revisions: list[str] = []  # the revision of each file download URL
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fetched(self) -> set[str]:
        """Repository files (``repo/path``) and plain files whose content was sent."""
        return {p for method, p in self.requests if method == "GET" and "/api/" not in p}

    @staticmethod
    def _listing(root: Path) -> list[dict]:
        return [
            {
                "type": "file",
                "path": p.relative_to(root).as_posix(),
                "size": p.stat().st_size,
                "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
            }
            for p in sorted(root.rglob("*"))
            if p.is_file()
        ]

    def answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and "/".join(parts[2:4]) in self.gated:
            self.requests.append((h.command, path))
            return self._send(h, 403, b'{"error": "gated"}', body, "application/json",
                              {"X-Error-Code": "GatedRepo"})  # fmt: skip
        if parts[4:6] == ["revision", "no-such-branch"]:
            self.requests.append((h.command, path))
            return self._send(h, 404, b'{"error": "no revision"}', body, "application/json",
                              {"X-Error-Code": "RevisionNotFound"})  # fmt: skip
        if parts[:2] == ["api", "models"] and "/".join(parts[2:4]) in self.repos:
            repo = "/".join(parts[2:4])
            listing = self._listing(self.repos[repo])
            if len(parts) >= 6 and parts[4] == "tree":  # list_repo_tree (recursive)
                payload: object = listing
            else:  # repo_info / model_info (optionally at a revision)
                siblings = [{"rfilename": f["path"]} for f in listing]
                payload = {"id": repo, "modelId": repo, "sha": self.sha, "siblings": siblings}
            self.requests.append((h.command, path))
            self.tokens.append(h.headers.get("authorization"))
            return self._send(h, 200, json.dumps(payload).encode(), body, "application/json")
        if len(parts) > 4 and parts[2] == "resolve" and "/".join(parts[:2]) in self.repos:
            repo, rel = "/".join(parts[:2]), "/".join(parts[4:])
            self.file_revisions.append(parts[3])
            file = self.repos[repo] / rel
            self.requests.append((h.command, f"{repo}/{rel}"))
            if not file.is_file():
                return self._send(h, 404, b"", body, headers={"X-Error-Code": "EntryNotFound"})
            data = file.read_bytes()
            etag = f'"{hashlib.sha1(data).hexdigest()}"'
            return self._send(h, 200, data, body, headers={"X-Repo-Commit": self.sha, "ETag": etag})
        if parts[0] == "files" and parts[-1] in self.files:
            self.requests.append((h.command, path))
            return self._send(h, 200, self.files[parts[-1]].read_bytes(), body)
        self.requests.append((h.command, path))
        return self._send(h, 404, b'{"error": "not found"}', body, "application/json",
                          {"X-Error-Code": "RepoNotFound"})  # fmt: skip

    @staticmethod
    def _send(h, status, data, body, content_type="application/octet-stream", headers=None):
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if body:
            h.wfile.write(data)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _use_hub(monkeypatch, endpoint: str, cache: Path) -> None:
    """Point huggingface_hub at ``endpoint`` (what HF_ENDPOINT does at import), online, with an
    empty cache of its own."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the test session sets it
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(model_source, "_RESOLVED", {})  # hub answers of this process: none yet
    # transformers keeps one HfApi per process, bound to the endpoint of its first use: a later
    # test's hub would otherwise be asked at the previous test's (closed) address, with retries.
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)


def _half_variants(folder: Path) -> None:
    """Beside every ``X.safetensors``, the fp16 variant ``X.fp16.safetensors`` (as the hub's SD 1.5
    and ControlNet repositories hold both)."""
    from safetensors.torch import load_file, save_file

    for p in list(folder.rglob("*.safetensors")):
        half = {k: v.half() for k, v in load_file(p).items()}
        save_file(half, p.with_name(p.name.replace(".safetensors", ".fp16.safetensors")),
                  metadata={"format": "pt"})  # fmt: skip


@pytest.fixture(scope="module")
def hub_repos(tiny_models_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """The tiny models as the hub's two repositories, each with an fp16 variant and decoys (files
    a run does not need, which must not come down)."""
    root = tmp_path_factory.mktemp("fake-hub")
    base, controlnet = root / "sd15", root / "control-seg"
    shutil.copytree(tiny_models_dir, base, ignore=shutil.ignore_patterns("controlnet"))
    shutil.copytree(tiny_models_dir / "controlnet", controlnet)
    for folder in (base, controlnet):
        _half_variants(folder)
    (base / "v1-5-pruned-emaonly.safetensors").write_bytes(b"decoy" * 100)
    (base / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"decoy")
    (base / "safety_checker").mkdir()
    (base / "safety_checker" / "config.json").write_text("{}")
    (controlnet / "diffusion_pytorch_model.bin").write_bytes(b"decoy")
    (controlnet / "images").mkdir()
    (controlnet / "images" / "input.png").write_bytes(b"decoy")
    weights = root / BACKBONE
    torch.save({"conv1.weight": torch.ones(2, 3, 1, 1)}, weights)
    return {BASE_ID: base, CONTROLNET_ID: controlnet, BACKBONE: weights}


@pytest.fixture
def fake_hub(hub_repos, tmp_path, monkeypatch) -> Iterator[FakeHub]:

    hub = FakeHub(
        {BASE_ID: hub_repos[BASE_ID], CONTROLNET_ID: hub_repos[CONTROLNET_ID]},
        {BACKBONE: hub_repos[BACKBONE]},
    )
    _use_hub(monkeypatch, hub.url, tmp_path / "hub-cache")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    yield hub
    hub.close()


@pytest.fixture
def backbone_config(fake_hub, tmp_path) -> Path:
    """A leaf mmseg config of the bundled tiny model whose backbone starts from weights at a URL
    (as the release configs do from download.pytorch.org)."""
    path = tmp_path / "tiny_with_weights.py"
    base = CONFIG_DIR / "deeplabv3plus_r18-tiny_2xb-demo_synthetic-64x128.py"
    path.write_text(
        f"_base_ = [{str(base)!r}]\n"
        f"model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained', "
        f"checkpoint='{fake_hub.url}/files/{BACKBONE}')))\n"
    )
    return path


def test_patterns_name_only_the_files_the_loader_needs():
    assert base_patterns("fp16") == [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        "tokenizer/*",
        "scheduler/scheduler_config.json",
    ]
    assert allow_patterns(CONTROLNET_FILES, "fp32") == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]


def test_models_download_fills_one_folder_that_loads_offline(
    fake_hub, backbone_config, hub_repos, tiny_components, tmp_path, monkeypatch, capsys
):
    import huggingface_hub

    calls = []
    real = huggingface_hub.snapshot_download

    def recording(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", recording)
    out = tmp_path / "models"
    code = main(
        ["models", "download", "--out", str(out), "--base", BASE_ID, "--controlnet",
         CONTROLNET_ID, "--mmseg-config", str(backbone_config), "--json"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err

    # 1. One folder: SD 1.5's subfolders, controlnet/, torch's hub layout, the record; no decoy,
    #    no second weights variant; snapshot_download's own metadata kept (a rerun resumes).
    files = {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(out).parts
    }
    assert files == {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        *(f"tokenizer/{p.name}" for p in (hub_repos[BASE_ID] / "tokenizer").iterdir()),
        "scheduler/scheduler_config.json",
        "controlnet/config.json",
        "controlnet/diffusion_pytorch_model.fp16.safetensors",
        f"torch/hub/checkpoints/{BACKBONE}",
        RECORD_NAME,
    }
    assert (out / ".cache" / "huggingface").is_dir()
    assert (out / "controlnet" / ".cache" / "huggingface").is_dir()
    # Only the fp16 weights came over the wire (the fp32 files and decoys were never asked for).
    weights = {p for p in fake_hub.fetched() if p.endswith((".safetensors", ".bin", ".png"))}
    assert weights == {
        f"{BASE_ID}/unet/diffusion_pytorch_model.fp16.safetensors",
        f"{BASE_ID}/vae/diffusion_pytorch_model.fp16.safetensors",
        f"{BASE_ID}/text_encoder/model.fp16.safetensors",
        f"{CONTROLNET_ID}/diffusion_pytorch_model.fp16.safetensors",
    }
    # huggingface_hub's own snapshot_download did it, with the allow_patterns, pinned to the
    # commit the hub named: a dry run (the plan and its size), then the download.
    assert [(r, k["allow_patterns"], k["revision"], k.get("dry_run", False)) for r, k in calls] == [
        (BASE_ID, base_patterns("fp16"), SHA, True),
        (BASE_ID, base_patterns("fp16"), SHA, False),
        (CONTROLNET_ID, allow_patterns(CONTROLNET_FILES, "fp16"), SHA, True),
        (CONTROLNET_ID, allow_patterns(CONTROLNET_FILES, "fp16"), SHA, False),
    ]

    # 2. The summary: progress lines, what was fetched, the total size, the lines to use next.
    lines = captured.out.splitlines()
    summary = json.loads(lines[-1])
    sizes = {p: (out / p).stat().st_size for p in files if p != RECORD_NAME}
    assert summary["ok"] is True and summary["total_bytes"] == sum(sizes.values())
    assert [(f["name"], f["revision"], f["skipped"]) for f in summary["fetched"]] == [
        ("base", SHA, False),
        ("controlnet", SHA, False),
        ("backbone", BACKBONE, False),
    ]
    n_base = sum(not f.startswith(("controlnet/", "torch/", RECORD_NAME)) for f in files)
    planned = f"[models] base: {BASE_ID}@{SHA[:12]}: {n_base} files, "
    assert any(line.startswith(planned) and str(out) in line for line in lines), lines
    assert any(line.startswith("[models] done: ") and str(out) in line for line in lines)
    assert f"  zodi transfer ... --models {out}" in lines
    assert f"  zodi pipeline --config C --models {out}" in lines
    assert any(f"TORCH_HOME={out}/torch" in line for line in lines)
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["base"]["revision"] == SHA and record["controlnet"]["variant"] == "fp16"

    # 3. Offline (the hub gone): the folder loads through load_components, float32 from the fp16
    #    files, equal to the original tiny weights rounded to half precision.
    fake_hub.close()
    parts = load_components(ModelsConfig(base=str(out), controlnet=None), "cpu", torch.float32)
    for name in ("unet", "vae", "text_encoder", "controlnet"):
        got = dict(getattr(parts, name).named_parameters())
        want = dict(getattr(tiny_components, name).named_parameters())
        assert got.keys() == want.keys()
        key = next(iter(want))
        assert got[key].dtype == torch.float32
        assert_close(got[key], want[key].half().float(), rtol=0, atol=0)
    assert parts.revisions["base"].startswith(f"{out}@local:")

    # 4. Training finds the backbone weights offline with TORCH_HOME=<out>/torch.
    monkeypatch.setenv("TORCH_HOME", str(out / "torch"))
    url = f"{fake_hub.url}/files/{BACKBONE}"
    assert resolve_pretrained(load_config(str(backbone_config)), timeout=1.0) == url

    # 5. A rerun (hub still gone) keeps the folder an earlier run filled: nothing is fetched.
    requests = len(fake_hub.requests)
    result = download_models(
        out,
        ModelsConfig(base=BASE_ID, controlnet=CONTROLNET_ID),
        (str(backbone_config),),
        say=lambda line: None,
    )
    assert [f.skipped for f in result.fetched] == [True, True, True]
    assert result.total_size == summary["total_bytes"] and len(fake_hub.requests) == requests


def test_models_download_fp32_variant_keeps_the_standard_files(fake_hub, hub_repos, tmp_path):
    out = tmp_path / "models32"
    result = download_models(
        out, ModelsConfig(base=BASE_ID, controlnet=CONTROLNET_ID), (), "fp32", say=lambda _: None
    )
    assert [f.name for f in result.fetched] == ["base", "controlnet"]
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert (out / unet).read_bytes() == (hub_repos[BASE_ID] / unet).read_bytes()
    assert f"{BASE_ID}/unet/diffusion_pytorch_model.fp16.safetensors" not in fake_hub.fetched()
    assert not (out / "torch").exists()


def test_models_download_unknown_repository_is_one_line(fake_hub, tmp_path, capsys):
    code = main(["models", "download", "--out", str(tmp_path / "m"), "--base", "fake/nope",
                 "--controlnet", CONTROLNET_ID, "--no-backbone"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("zodi models: error: models.base: hub id 'fake/nope'")
    assert "not found on the hub" in err


def test_models_download_without_the_variant_fetches_the_standard_weights(
    fake_hub, tiny_models_dir, hub_repos, tmp_path
):
    fake_hub.repos["fake/sd15-fp32-only"] = tiny_models_dir  # no fp16 weights in it
    models = ModelsConfig(base="fake/sd15-fp32-only", controlnet=CONTROLNET_ID)
    lines: list[str] = []
    out = tmp_path / "m"
    download_models(out, models, (), "fp16", say=lines.append)
    assert any("has no fp16 variant of unet/diffusion_pytorch_model.fp16.safetensors" in line
               for line in lines)  # fmt: skip
    fetched = fake_hub.fetched()
    assert "fake/sd15-fp32-only/unet/diffusion_pytorch_model.safetensors" in fetched
    assert f"{CONTROLNET_ID}/diffusion_pytorch_model.fp16.safetensors" in fetched  # it has fp16
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert (out / unet).read_bytes() == (tiny_models_dir / unet).read_bytes()


def test_models_download_missing_weights_name_the_files(fake_hub, hub_repos, tmp_path):
    broken = tmp_path / "no-unet-weights"
    shutil.copytree(hub_repos[BASE_ID], broken)
    for p in (broken / "unet").glob("diffusion_pytorch_model*"):
        p.unlink()
    fake_hub.repos["fake/broken"] = broken
    models = ModelsConfig(base="fake/broken", controlnet=CONTROLNET_ID)
    with pytest.raises(FileNotFoundError) as exc:
        download_models(tmp_path / "m", models, (), "fp16", say=lambda _: None)
    message = str(exc.value)
    assert "\n" not in message and message.startswith("models.base: model folder")
    assert "missing: unet/diffusion_pytorch_model.safetensors" in message
    assert message.endswith("(not in the hub repository 'fake/broken')")


def test_models_download_rerun_without_the_hub_keeps_a_complete_folder_and_names_a_lost_file(
    fake_hub, tmp_path
):
    """With the hub out of reach, a rerun trusts snapshot_download's own record of what an
    earlier run fetched: a complete folder is kept, a lost file is a one-line network error."""
    out, models = tmp_path / "m", ModelsConfig(base=BASE_ID, controlnet=CONTROLNET_ID)
    download_models(out, models, (), "fp16", say=lambda _: None)
    fake_hub.close()
    lines: list[str] = []
    kept = download_models(out, models, (), "fp16", say=lines.append)
    assert [f.skipped for f in kept.fetched] == [True, True]
    assert any(line.startswith("base: ") and "already in" in line for line in lines), lines
    (out / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    t0 = time.perf_counter()
    with pytest.raises(HubUnreachableError) as exc:
        download_models(out, models, (), "fp16", say=lambda _: None)
    assert time.perf_counter() - t0 < 10.0
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"models.base: cannot download {BASE_ID!r}")
    assert "a network problem" in message and "--models DIR" in message
    assert "missing (unet/diffusion_pytorch_model.fp16.safetensors)" in message


# Fast failure: a hub that refuses connections -------------------------------------------------


@pytest.fixture
def closed_hub(tmp_path, monkeypatch) -> str:

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    _use_hub(monkeypatch, endpoint, tmp_path / "empty-cache")
    return endpoint


def test_load_components_unreachable_hub_fails_in_seconds_with_the_remedy(closed_hub):
    t0 = time.perf_counter()
    with pytest.raises(HubUnreachableError) as exc:
        load_components(ModelsConfig(base="someone/some-model", controlnet=None))
    assert time.perf_counter() - t0 < 10.0
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("models.base: hub id 'someone/some-model' not cached")
    assert closed_hub in message and "a network problem" in message
    assert "zodi models download --out DIR" in message and "--models DIR" in message
    assert "HF_HUB_OFFLINE=1" in message


def test_models_download_unreachable_hub_is_one_line_in_seconds(closed_hub, tmp_path, capsys):
    out = tmp_path / "models"
    t0 = time.perf_counter()
    code = main(["models", "download", "--out", str(out), "--no-backbone", "--json"])
    assert time.perf_counter() - t0 < 10.0
    captured = capsys.readouterr()
    assert code == 1 and captured.err.count("\n") == 1
    err = captured.err
    assert err.startswith("zodi models: error: models.base: cannot download ")
    assert "a network problem" in err and "--models DIR" in err and "HF_HUB_OFFLINE=1" in err
    assert "--verbose" not in err  # a message for a person, no traceback hint
    assert json.loads(captured.out.splitlines()[-1])["ok"] is False
    assert not out.exists()


def test_silent_hub_is_a_network_problem_after_the_timeout(tmp_path, monkeypatch):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        _use_hub(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path / "cache")
        # The first hub question of a process imports huggingface_hub's API client (~3 s here);
        # what is timed is the wait for a silent hub, so ask once before the clock starts.
        model_problems(ModelsConfig(base="someone/warm-up", controlnet=None), timeout=1.0)
        t0 = time.perf_counter()
        models = ModelsConfig(base="someone/some-model", controlnet=None)
        (problem,) = model_problems(models, timeout=1.0)
        assert time.perf_counter() - t0 < 3.0
    assert "unreachable within 1 s" in problem
    assert "a network problem" in problem and "--models DIR" in problem


def test_load_components_unreachable_hub_loads_what_is_cached(fake_hub, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    cn_patterns = allow_patterns(CONTROLNET_FILES, "fp32")
    for repo, patterns in ((BASE_ID, base_patterns("fp32")), (CONTROLNET_ID, cn_patterns)):
        huggingface_hub.snapshot_download(repo, allow_patterns=patterns)
    fake_hub.close()
    _use_hub(monkeypatch, f"http://127.0.0.1:{_closed_port()}", Path(constants.HF_HUB_CACHE))
    t0 = time.perf_counter()
    parts = load_components(ModelsConfig(base=BASE_ID, controlnet=CONTROLNET_ID))
    assert time.perf_counter() - t0 < 10.0
    # The commit of the cached files is what loaded, and what lineage records (not "main").
    assert parts.revisions == {"base": f"{BASE_ID}@{SHA}", "controlnet": f"{CONTROLNET_ID}@{SHA}"}


# Hub ids resolved to their commit; the token chain; the fp16 variant ---------------------------


def test_hub_models_load_at_the_commit_the_hub_names_and_lineage_records_it(fake_hub):
    models = ModelsConfig(base=BASE_ID, controlnet=CONTROLNET_ID)
    assert models_fingerprint(models) == f"{BASE_ID}@{SHA},{CONTROLNET_ID}@{SHA}"
    parts = load_components(models)
    assert parts.revisions == {"base": f"{BASE_ID}@{SHA}", "controlnet": f"{CONTROLNET_ID}@{SHA}"}
    # The files came from that commit: every download URL names it.
    assert any(p.startswith(f"{BASE_ID}/unet/") for p in fake_hub.fetched())
    assert set(fake_hub.file_revisions) == {SHA}

    fake_hub.sha = SHA2  # "main" moves on the hub: a new process sees another model
    model_source._RESOLVED.clear()
    assert models_fingerprint(models) == f"{BASE_ID}@{SHA2},{CONTROLNET_ID}@{SHA2}"


def test_a_pinned_commit_is_not_asked_for(fake_hub):
    models = ModelsConfig(
        base=BASE_ID, revision=SHA, controlnet=CONTROLNET_ID, controlnet_revision=SHA
    )
    assert models_fingerprint(models) == f"{BASE_ID}@{SHA},{CONTROLNET_ID}@{SHA}"
    assert not any("/api/models" in p for _, p in fake_hub.requests)


def test_the_hub_is_asked_with_the_token_of_hf_auth_login(fake_hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    token_file = tmp_path / "hf-home" / "token"  # where `hf auth login` writes it
    token_file.parent.mkdir()
    token_file.write_text("hf_login_token_0123")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    models_fingerprint(ModelsConfig(base=BASE_ID, controlnet=None))
    assert fake_hub.tokens == ["Bearer hf_login_token_0123"]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_half_precision_loads_the_fp16_variant_where_the_repository_has_one(
    fake_hub, tiny_models_dir, dtype
):
    fake_hub.repos["fake/sd15-fp32-only"] = tiny_models_dir  # no fp16 weights in it
    models = ModelsConfig(base="fake/sd15-fp32-only", controlnet=CONTROLNET_ID)
    parts = load_components(models, "cpu", getattr(torch, dtype))
    assert parts.unet.dtype == getattr(torch, dtype)
    weights = {p for p in fake_hub.fetched() if p.endswith(".safetensors")}
    half = dtype == "float16"
    cn = (
        "diffusion_pytorch_model.fp16.safetensors"
        if half
        else "diffusion_pytorch_model.safetensors"
    )
    assert weights == {
        "fake/sd15-fp32-only/unet/diffusion_pytorch_model.safetensors",  # no variant: the standard
        "fake/sd15-fp32-only/vae/diffusion_pytorch_model.safetensors",
        "fake/sd15-fp32-only/text_encoder/model.safetensors",
        f"{CONTROLNET_ID}/{cn}",  # it has both: the variant in half precision
    }


def test_the_hubs_refusals_are_one_line_each_naming_the_field_and_what_to_do(fake_hub):
    fake_hub.gated.add("fake/gated")
    cases = {
        "fake/gated": (None, "models.base: hub id 'fake/gated' refused access (gated)"),
        "fake/nope": (None, "models.base: hub id 'fake/nope' (revision main) not found on the hub"),
        BASE_ID: ("no-such-branch", f"models.base: hub id '{BASE_ID}' has no revision"),
    }
    for repo, (revision, start) in cases.items():
        models = ModelsConfig(base=repo, revision=revision, controlnet=None)
        (problem,) = model_problems(models, timeout=2.0)
        assert "\n" not in problem and problem.startswith(start), problem
    assert "hf auth login" in model_problems(ModelsConfig(base="fake/gated", controlnet=None))[0]
    models = ModelsConfig(base=BASE_ID, revision="no-such-branch", controlnet=None)
    assert "fix transfer.models.revision" in model_problems(models, "transfer.")[0]
    with pytest.raises(PermissionError, match="accept its licence"):
        load_components(ModelsConfig(base="fake/gated", controlnet=None))
