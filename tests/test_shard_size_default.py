"""The shard size's default has one owner (DEFAULT_SHARD_SIZE, zodi_core/config/pipeline.py):
every flow that takes ``shard_size`` defaults to it, and the deployments do not repeat another."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from flows.fanout import fanout_transfer_flow
from flows.regenerate import regenerate_flow
from flows.transfer import transfer_flow
from zodi_core.config import PipelineConfig
from zodi_core.config.pipeline import DEFAULT_SHARD_SIZE

PREFECT_YAML = Path(__file__).resolve().parents[1] / "deployments" / "prefect.yaml"


@pytest.mark.parametrize("flow", [transfer_flow, fanout_transfer_flow, regenerate_flow])
def test_every_flow_defaults_to_the_one_shard_size(flow):
    default = inspect.signature(flow.fn).parameters["shard_size"].default
    assert default == DEFAULT_SHARD_SIZE, flow.name
    assert PipelineConfig().shard_size == DEFAULT_SHARD_SIZE


def test_prefect_yaml_repeats_no_other_shard_size():
    data = yaml.safe_load(PREFECT_YAML.read_text())
    seen = {
        d["name"]: d["parameters"]["shard_size"]
        for d in data["deployments"]
        if "shard_size" in (d.get("parameters") or {})
    }
    assert data["deployments"]  # the file was read and has deployments to check
    assert all(value == DEFAULT_SHARD_SIZE for value in seen.values()), seen
