"""Every config field is checked when the config is read: a bad value costs a second, not the
transfer's hours (issue 18). Each bad config is answered by ``zodi pipeline --config`` with exit
2 and one line naming the field, before preflight, ingestion or any model load."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from zodi_cli import main
from zodi_core import config as config_module
from zodi_core.config import ConfigError, PipelineConfig

#: A valid pipeline config (the demo preset); each case below breaks one field of it.
BASE = {
    "preset": "demo",
    "source": {"dataset": "cityscapes", "root": "data/cityscapes", "split": "train"},
    "source_val": {"dataset": "cityscapes", "root": "data/cityscapes", "split": "val"},
    "targets": [{"dataset": "acdc", "root": "data/acdc", "condition": "night", "split": "val"}],
    "domains": ["night"],
    "transfer": {"models": {"base": "models/tiny", "controlnet": None}},
    "storage": {"root": "artifacts"},
}

#: (section, the change as {dotted key: value}, what the one line says)
CASES = [
    ("transfer", {"transfer.num_inference_steps": 0}, "transfer.num_inference_steps: expected a value >= 1, received 0"),
    ("transfer", {"transfer.eta": 1.5}, "transfer.eta: expected a value <= 1, received 1.5"),
    ("transfer", {"transfer.guidance_scale": -1}, "transfer.guidance_scale: expected a value >= 0, received -1"),
    ("transfer", {"transfer.strength": 1.5}, "transfer.strength: expected a strength in (0, 1], received 1.5"),
    ("transfer", {"transfer.short_side": 4}, "transfer.short_side: expected a value >= 8, received 4"),
    ("transfer", {"transfer.size_multiple": 12}, "transfer.size_multiple: expected a multiple of 8, received 12"),
    ("transfer", {"transfer.batch_size": 0}, "transfer.batch_size: expected a value >= 1, received 0"),
    ("transfer", {"transfer.seed": -1}, "transfer.seed: expected a value >= 0, received -1"),
    ("transfer", {"transfer.device": "gpu"}, "transfer.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', received 'gpu'"),
    ("transfer", {"transfer.strenght": 0.5}, "transfer.strenght: unknown key (received 0.5); did you mean 'strength'?"),
    ("transfer", {"transfer.eta": ".nan"}, "transfer.eta: expected a finite number"),
    ("domains", {"transfer.domain_settings": {"dusk": {"prompt": "at dusk", "seed_offset": -3}}, "domains": ["dusk"]}, "transfer.domain_settings.dusk.seed_offset: expected a value >= 0, received -3"),
    ("domains", {"domains": ["Night"]}, "domains.0: domain name: expected 1-64 characters"),
    ("domains", {"domains": []}, "domains: expected at least one item, received none"),
    ("models", {"transfer.models.base": ""}, "transfer.models.base: expected a non-empty value, received ''"),
    ("models", {"transfer.models.revision": " "}, "transfer.models.revision: expected a non-empty value"),
    ("train", {"train.max_iters": -5}, "train.max_iters: expected a value >= 1, received -5"),
    ("train", {"train.max_epochs": 0}, "train.max_epochs: expected a value >= 1, received 0"),
    ("train", {"train.seeds": []}, "train.seeds: expected at least one item, received none"),
    ("train", {"train.seeds": [0, 2**32]}, "train.seeds.1: expected a value < 4294967296"),
    ("train", {"train.lambda_sim": -0.1}, "train.lambda_sim: expected a value >= 0, received -0.1"),
    ("train", {"train.batch_size": 0}, "train.batch_size: expected a value >= 1, received 0"),
    ("train", {"train.feature_stage": 99}, "train.feature_stage: expected a value <= 7, received 99"),
    ("train", {"train.log_level": "LOUD"}, "train.log_level: expected one of"),
    ("train", {"train.mmseg_config": ""}, "train.mmseg_config: expected a non-empty value"),
    ("train", {"train.config": "x.py"}, "train.config: unknown key (received 'x.py'); did you mean 'mmseg_config'?"),
    ("evaluation", {"evaluation.width": 0}, "evaluation.width: expected a value >= 8, received 0"),
    ("evaluation", {"evaluation.height": -1}, "evaluation.height: expected a value >= 8, received -1"),
    ("evaluation", {"evaluation.batch_size": 0}, "evaluation.batch_size: expected a value >= 1, received 0"),
    ("evaluation", {"evaluation.dtype": "float64"}, "evaluation.dtype: expected one of"),
    ("storage", {"storage.root": ""}, "storage.root: expected a folder or s3://bucket/prefix, received an empty string"),
    ("storage", {"storage.endpoint_url": "localhost:7480"}, "storage.endpoint_url: expected a value matching"),
    ("datasets", {"source.subset": 0}, "source.subset: expected a value >= 1, received 0"),
    ("datasets", {"source.split": "../train"}, "source.split: expected a value matching"),
    ("datasets", {"targets": [{"dataset": "acdc", "root": "data/acdc", "condition": "dusk"}]}, "targets.0.condition: expected one of 'night', 'snow', 'rain' or 'fog', received 'dusk'"),
    ("datasets", {"targets": [{"dataset": "gta5", "root": "data/gta5", "name": "a/b"}]}, "targets.0.name: expected a value matching"),
    ("datasets", {"source.dataset": "kitti"}, "source.dataset: expected one of"),
    ("quality", {"quality.drop_lowest_fraction": 1.0}, "quality.drop_lowest_fraction: expected a value < 1, received 1.0"),
    ("quality", {"quality.min_clip": 2}, "quality.min_clip: expected a value <= 1, received 2"),
    ("quality", {"quality.min_layout_miou": -1}, "quality.min_layout_miou: expected a value >= 0, received -1"),
    ("quality", {"quality.batch_size": 0}, "quality.batch_size: expected a value >= 1, received 0"),
    ("quality", {"quality.device": "tpu"}, "quality.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', received 'tpu'"),
    ("report", {"report.presign_expires_s": 0}, "report.presign_expires_s: expected a value >= 1, received 0"),
    ("report", {"report.embed_max_kb": 1}, "report.embed_max_kb: expected a value >= 16, received 1"),
    ("report", {"report.images": "inline"}, "report.images: expected one of"),
    ("pipeline", {"shard_size": 0}, "shard_size: expected a value >= 1, received 0"),
]  # fmt: skip


def _bad_config(tmp_path: Path, change: dict) -> Path:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in change.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = float("nan") if value == ".nan" else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_base_config_is_valid(tmp_path):
    config = PipelineConfig.from_yaml(_bad_config(tmp_path, {}))
    assert config.storage.root == str(tmp_path / "artifacts")


def test_the_cases_cover_every_section():
    sections = {section for section, _, _ in CASES}
    assert len(CASES) >= 20
    assert sections >= {"transfer", "train", "evaluation", "storage", "datasets", "domains",
                        "quality", "report", "models", "pipeline"}  # fmt: skip


@pytest.mark.parametrize(
    ("section", "change", "line"), CASES, ids=[next(iter(c)) for _, c, _ in CASES]
)
def test_zodi_pipeline_names_the_bad_field_in_one_line_before_any_work(
    section, change, line, tmp_path, capsys, monkeypatch
):
    import zodi_core.preflight

    called = []
    monkeypatch.setattr(zodi_core.preflight, "preflight", lambda *a, **k: called.append(a) or [])
    path = _bad_config(tmp_path, change)
    t0 = time.perf_counter()
    code = main(["pipeline", "--config", str(path)])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    assert line in err
    problem_lines = [x for x in err.splitlines() if line in x]
    assert len(problem_lines) == 1  # one line names the field
    assert called == []  # preflight never ran
    assert not (tmp_path / "artifacts").exists()  # nothing ingested, nothing generated
    assert seconds < 5.0


def test_every_problem_is_listed_at_once(tmp_path, capsys):
    change = {
        "train.max_iters": -5,
        "evaluation.width": 0,
        "transfer.strenght": 0.5,
        "storage.endpoint_url": "nope",
        "quality.batch_size": 0,
    }
    code = main(["pipeline", "--config", str(_bad_config(tmp_path, change))])
    err = capsys.readouterr().err
    assert code == 2
    for key in change:
        assert sum(line.strip().startswith(f"{key}: ") for line in err.splitlines()) == 1, key
    assert "invalid configuration (5 problems)" in err


def test_problems_are_data_on_the_error():
    with pytest.raises(ConfigError) as caught:
        PipelineConfig.preset("demo", train={"max_iters": -5}, evaluation={"width": 0})
    assert caught.value.problems == [
        "train.max_iters: expected a value >= 1, received -5",
        "evaluation.width: expected a value >= 8, received 0",
    ]


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"train.max_iters": -5}, "train.max_iters: expected a value >= 1, received -5"),
        ({"evaluation.width": 0}, "evaluation.width: expected a value >= 8, received 0"),
    ],
)
def test_zodi_pipeline_as_a_program_exits_2_within_seconds(change, line, tmp_path):
    """The issue's two cases, as a user runs them: a real process, its exit code and stderr."""
    zodi = Path(sys.executable).parent / "zodi"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(zodi), "pipeline", "--config", str(_bad_config(tmp_path, change))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"zodi pipeline: error: invalid configuration: {line}"
    )
    assert not (tmp_path / "artifacts").exists()
    assert time.perf_counter() - t0 < 60  # the import of the command line, not a transfer


# Every field of every config model has a bound -------------------------------------------------

#: Fields where an empty string is a meaningful value, with the reason.
EMPTY_ALLOWED = {
    ("TransferConfig", "prompt_suffix"): "no suffix after the derived prompt",
    ("TransferConfig", "negative_prompt"): "the pocket models' unconditional branch is ''",
    ("DomainSettings", "negative_prompt"): "as TransferConfig.negative_prompt",
}


def _config_models() -> list[type[BaseModel]]:
    return [
        obj
        for obj in vars(config_module).values()
        if isinstance(obj, type)
        and issubclass(obj, config_module._Config)
        and obj is not config_module._Config
    ]


def _kinds(annotation) -> set:
    """The leaf types of an annotation (through Optional, Annotated, tuple, dict)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _kinds(args[0])
    if not args:
        return {annotation}
    return set().union(*(_kinds(a) for a in args if a is not Ellipsis))


def _is_tuple(annotation) -> bool:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_tuple(a) for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) is tuple


def _prefix(model: type[BaseModel]) -> str:
    """How a field of ``model`` is named: a pipeline config's as its YAML key, others' with the
    class name (``TransferConfig.strength``)."""
    return "" if model is PipelineConfig else rf"{model.__name__}\."


#: A valid instance's required fields, per model.
REQUIRED = {"DatasetSpec": {"dataset": "cityscapes", "root": "data"}}


def _fields(kind: set) -> list[tuple[type[BaseModel], str, typing.Any]]:
    out = []
    for model in _config_models():
        for name, field in model.model_fields.items():
            kinds = _kinds(field.annotation)
            if kinds & kind and not kinds & {bool}:
                out.append((model, name, field.annotation))
    return out


NUMERIC = _fields({int, float})
STRINGS = _fields({str})


def test_every_config_model_is_enumerated():
    names = {m.__name__ for m in _config_models()}
    assert names >= {"ModelsConfig", "DomainSettings", "TransferConfig", "TrainConfig",
                     "EvalConfig", "StorageConfig", "ReportConfig", "DatasetSpec",
                     "QualityConfig", "PipelineConfig"}  # fmt: skip
    assert len(NUMERIC) >= 25 and len(STRINGS) >= 20


@pytest.mark.parametrize(
    ("model", "name", "annotation"), NUMERIC, ids=[f"{m.__name__}.{n}" for m, n, _ in NUMERIC]
)
def test_every_numeric_field_is_bounded(model, name, annotation):
    """An absurd value (-10**12) and, for floats, NaN are refused, naming the field."""
    values = [-(10**12)] + ([math.nan] if float in _kinds(annotation) else [])
    for value in values:
        value = (value,) if _is_tuple(annotation) else value
        with pytest.raises(ConfigError, match=rf"\n  {_prefix(model)}{name}(\.0)?: "):
            model(**{**REQUIRED.get(model.__name__, {}), name: value})


@pytest.mark.parametrize(
    ("model", "name", "annotation"), STRINGS, ids=[f"{m.__name__}.{n}" for m, n, _ in STRINGS]
)
def test_every_path_and_name_field_refuses_an_empty_value(model, name, annotation):
    if (model.__name__, name) in EMPTY_ALLOWED:
        model(**{**REQUIRED.get(model.__name__, {}), name: ""})  # valid, for the listed reason
        return
    value = ("",) if _is_tuple(annotation) else ""
    if typing.get_origin(model.model_fields[name].annotation) is dict:
        value = {"": {}}
    with pytest.raises(ConfigError, match=rf"\n  {_prefix(model)}{name}(\.0)?: "):
        model(**{**REQUIRED.get(model.__name__, {}), name: value})
