"""The GPU Kubernetes pool's base job template: prefect-kubernetes' default with
:data:`GPU_VARIABLES` patched in (so a newer prefect-kubernetes brings its fixes). Printed by
``python -m deployments.gpu_pool``, for ``prefect work-pool create --base-job-template``."""

from __future__ import annotations

import copy
import json
from typing import Any

DEFAULT_IMAGE = "zodi-worker:gpu"

#: Job variables added to (or overriding keys of) the worker's: name → JSON schema. ``cpu`` and
#: ``memory`` are request *and* limit (guaranteed resources), replacing :data:`REPLACED_VARIABLES`.
GPU_VARIABLES: dict[str, dict[str, Any]] = {
    "image": {
        "type": "string",
        "default": DEFAULT_IMAGE,
        "description": "The worker image (docker/Dockerfile): CUDA PyTorch, the pinned stack, "
        "the project in /opt/zodi.",
    },
    "gpu_count": {
        "type": "integer",
        "title": "GPU count",
        "default": 1,
        "minimum": 0,
        "description": "NVIDIA GPUs per flow run: the container's nvidia.com/gpu limit (0: none).",
    },
    "cpu": {
        "type": "string",
        "title": "CPU",
        "default": "4",
        "description": "CPU request and limit of the container (Kubernetes quantity).",
    },
    "memory": {
        "type": "string",
        "title": "Memory",
        "default": "24Gi",
        "description": "Memory request and limit of the container (Kubernetes quantity).",
    },
    "node_selector": {
        "type": "object",
        "title": "Node selector",
        "default": {"nvidia.com/gpu.present": "true"},
        "additionalProperties": {"type": "string"},
        "description": "Schedule flow-run pods on GPU nodes (the label set by NVIDIA's GPU "
        "feature discovery).",
    },
    "tolerations": {
        "type": "array",
        "title": "Tolerations",
        "default": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "items": {"type": "object"},
        "description": "Tolerate the taint GPU node pools usually carry.",
    },
    "env_from": {
        "type": "array",
        "title": "Env from",
        "default": [{"secretRef": {"name": "zodi-aws", "optional": True}}],
        "items": {"type": "object"},
        "description": "Secrets and config maps loaded into the environment (S3 credentials: "
        "a Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3).",
    },
    "pod_watch_timeout_seconds": {
        "default": 600,
        "description": "Seconds to watch for pod creation before timing out (GPU nodes may "
        "need to scale up).",
    },
}

REPLACED_VARIABLES = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")


def kubernetes_default_template() -> dict[str, Any]:
    """prefect-kubernetes' default base job template (a fresh copy)."""
    try:
        from prefect_kubernetes.worker import KubernetesWorker
    except ImportError:
        raise ImportError(
            "the GPU pool's job template needs prefect-kubernetes: "
            "pip install -c constraints.txt prefect-kubernetes"
        ) from None
    return copy.deepcopy(KubernetesWorker.get_default_base_job_template())


def gpu_base_job_template() -> dict[str, Any]:
    """The worker's default base job template with :data:`GPU_VARIABLES` patched in."""
    template = kubernetes_default_template()
    props = template["variables"]["properties"]
    for name in REPLACED_VARIABLES:
        props.pop(name, None)
    for name, schema in GPU_VARIABLES.items():
        props[name] = {**props.get(name, {}), **copy.deepcopy(schema)}
    template["variables"]["description"] = (
        "prefect-kubernetes' default base job template with ZoDi's GPU variables "
        "(deployments/gpu_pool.py): gpu_count, cpu, memory, node_selector, tolerations, env_from."
    )

    job = template["job_configuration"]["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod["nodeSelector"] = "{{ node_selector }}"
    pod["tolerations"] = "{{ tolerations }}"
    container["envFrom"] = "{{ env_from }}"
    resources = {"cpu": "{{ cpu }}", "memory": "{{ memory }}", "nvidia.com/gpu": "{{ gpu_count }}"}
    container["resources"] = {"requests": dict(resources), "limits": dict(resources)}
    return template


if __name__ == "__main__":
    print(json.dumps(gpu_base_job_template(), indent=2, sort_keys=True))
