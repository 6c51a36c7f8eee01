"""The zodi command line: every subcommand has --help and --json; examples configs load; every
failure ends with one line `zodi <command>: error: ...` (exit 2 usage/configuration, 1 the work
failed), also as JSON with --json; tracebacks only with --verbose."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zodi_cli import build_parser, main
from zodi_core.config import PipelineConfig

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {
    "synth",
    "ingest",
    "transfer",
    "preview",
    "tiny-models",
    "score",
    "tune-strength",
    "tiny-clip",
    "pocket-models",
    "gc",
    "train",
    "evaluate",
    "predict",
    "models",
    "demo",
    "pipeline",
    "deploy",
    "submit",
}


def _subcommands() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_cli_has_every_subcommand():
    assert EXPECTED <= set(_subcommands())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_subcommand_help_and_json_flag(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"zodi {name}" in out and "--json" in out


def test_cli_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["pipeline", "--config", str(tmp_path / "missing.yaml"), "--json"])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "missing.yaml" in captured.err
    assert captured.err.startswith("zodi pipeline: error: config file ")
    assert json.loads(captured.out.strip().splitlines()[-1])["ok"] is False


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == "zodi 0.1.0"


def _without_help(parser, prog: str = "zodi") -> list[str]:
    """The options, arguments and subcommands (nested ones too) that have no help text."""
    import argparse

    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            # argparse lists a subcommand in --help only when add_parser got help=
            helped = {c.dest for c in action._choices_actions if c.help}
            missing += [f"{prog} {name}" for name in action.choices if name not in helped]
            for name, sub in action.choices.items():
                missing += _without_help(sub, f"{prog} {name}")
        elif not action.help:
            missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_cli_every_option_has_help_text():
    """Every option and argument of every subcommand (nested ones such as `zodi models
    download` included) and of `zodi` itself, and every subcommand, says what it is for."""
    import argparse

    assert _without_help(build_parser()) == []
    assert "zodi models download" in _progs(build_parser())
    # The walk does see a missing help, nested or not.
    bad = argparse.ArgumentParser()
    bad.add_argument("--top")
    nested = bad.add_subparsers().add_parser("group", help="a group")
    nested.add_subparsers().add_parser("leaf").add_argument("--deep", help=None)
    assert _without_help(bad) == ["zodi --top", "zodi group leaf", "zodi group leaf --deep"]


def _progs(parser, prog: str = "zodi") -> list[str]:
    """Every (sub)command's name path: zodi, zodi synth, ..., zodi models download."""
    import argparse

    out = [prog]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _progs(sub, f"{prog} {name}")
    return out


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["pipeline", "--json"], "zodi pipeline: error: the following arguments are required: "
         "--config (see `zodi pipeline --help`)"),
        (["transfer", "--manifest", "m", "--domain", "Dusk Storm", "--out", "o", "--json"],
         "zodi transfer: error: argument --domain: 'Dusk Storm': domain name: expected "),
        (["frobnicate"], "zodi: error: argument COMMAND: invalid choice: 'frobnicate'"),
        ([], "zodi: error: the following arguments are required: COMMAND"),
    ],
)  # fmt: skip
def test_cli_usage_errors_are_one_line_exit_2_and_json(argv, line, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(line), captured.err
    if "--json" in argv:
        out = json.loads(captured.out.strip())
        assert (out["ok"], out["exit_code"]) == (False, 2) and out["error"] in captured.err
    else:
        assert captured.out == ""


def _failing_synth(monkeypatch, err: BaseException) -> None:
    import zodi_core.datasets.synth as synth

    def boom(*args, **kwargs):
        raise err

    monkeypatch.setattr(synth, "write_synthetic", boom)


@pytest.mark.parametrize(
    ("err", "code", "line"),
    [
        (RuntimeError("the GPU caught fire"), 1,
         "zodi synth: error: RuntimeError: the GPU caught fire (rerun with --verbose for the "
         "traceback)"),
        (ValueError("n_train: expected >= 1, received 0"), 2,
         "zodi synth: error: n_train: expected >= 1, received 0"),
        ("transient", 1, "zodi synth: error: s3://b/k: connection reset; retried 3 times"),
        ("permanent", 2, "zodi synth: error: s3://b: bucket does not exist; create it"),
    ],
)  # fmt: skip
def test_cli_failures_end_with_one_line_and_the_right_exit_code(
    monkeypatch, tmp_path, capsys, err, code, line
):
    from zodi_core import storage

    if err == "transient":
        err = storage.TransientStorageError("s3://b/k: connection reset; retried 3 times")
    elif err == "permanent":
        err = storage.PermanentStorageError("s3://b: bucket does not exist; create it")
    _failing_synth(monkeypatch, err)
    assert main(["synth", "--out", str(tmp_path), "--json"]) == code
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [line]
    out = json.loads(captured.out.strip())
    assert out["ok"] is False and out["exit_code"] == code and out["command"] == "synth"


def test_cli_verbose_shows_the_traceback_and_still_ends_with_the_error_line(
    monkeypatch, tmp_path, capsys
):
    _failing_synth(monkeypatch, RuntimeError("boom"))
    assert main(["synth", "--out", str(tmp_path), "--verbose"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):" and "RuntimeError: boom" in err
    assert err[-1] == "zodi synth: error: RuntimeError: boom"
    _failing_synth(monkeypatch, RuntimeError("boom"))
    assert main(["--verbose", "synth", "--out", str(tmp_path)]) == 1  # global flag too
    assert capsys.readouterr().err.startswith("Traceback")


def test_cli_failure_as_a_program_prints_one_line(tmp_path):
    """A real process: a config with an unknown key; stderr is the one error line, exit 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage:\n  rot: /tmp/x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "zodi_cli", "pipeline", "--config", str(bad), "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zodi pipeline: error: "), proc.stderr
    assert "storage.rot" in err[0] and "unknown key" in err[0]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["exit_code"] == 2


def test_cli_console_script_runs():
    exe = Path(sys.executable).parent / "zodi"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "synth" in proc.stdout


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path):
    import yaml

    from zodi_core.config import TransferConfig

    cfg = PipelineConfig.from_yaml(path)
    assert cfg.domains and cfg.targets
    preset = yaml.safe_load(path.read_text())["preset"]
    assert cfg.transfer.num_inference_steps == TransferConfig.preset(preset).num_inference_steps
    if path.name != "synthetic.yaml":  # the real-data examples: the paper's 20 DDIM steps
        assert cfg.transfer.num_inference_steps == 20


def test_install_script_is_a_no_op_once_installed():
    """`make test` / `make demo` run scripts/install.sh every time: with the stamp of the current
    inputs present it must install nothing (seconds, not minutes)."""
    venv = Path(sys.executable).parent.parent
    if not any(venv.glob(".zodi-installed-*")):
        pytest.fail(f"{venv} has no install stamp: create it with `make install`")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VENV": str(venv)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "[install]" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_failed_pipeline_is_a_few_lines_ending_with_the_error(
    synthetic_copy, tiny_models_dir, tmp_path
):
    """`zodi pipeline` on the demo data with a corrupt source image (a real failed flow run):
    a few lines, no traceback, no Prefect log lines, the last one naming the file; exit 1.
    With --verbose, Prefect's logs and the traceback are shown, then the error line."""
    import yaml

    from zodi_cli._common import demo_config

    data = {n: str(synthetic_copy / n) for n in ("cityscapes", "acdc", "gta5")}
    cfg = demo_config(tmp_path, data, tiny_models_dir, ["night"])
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    image = sorted((synthetic_copy / "cityscapes" / "leftImg8bit" / "train").rglob("*.png"))[0]
    image.write_bytes(image.read_bytes()[:200])
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    for name in ("PREFECT_LOGGING_LEVEL", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        env.pop(name, None)

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "zodi_cli", "pipeline", "--config", str(config), *extra],
            capture_output=True, text=True, timeout=400, cwd=REPO, env=env,
        )  # fmt: skip

    proc = run("--json")
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # One line per ingested dataset (the stage lines), the corrupt one's ingest Failed.
    stage = [line for line in lines if line.startswith("[ingest] ")]
    assert len(stage) == 3 and any(line.endswith("(Failed)") for line in stage), lines
    assert len(lines) - len(stage) <= 5, lines
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zodi pipeline: error: 1 problem(s) in cityscapes")
    assert f"{image}: corrupt or truncated image" in err[0]
    assert "Traceback" not in proc.stderr and "| ERROR" not in proc.stderr
    assert "telemetry" not in (proc.stdout + proc.stderr).lower()
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["ok"], out["exit_code"]) == (False, 1) and str(image) in out["error"]

    verbose = run("--verbose")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and "Flow run" in verbose.stderr
    # The error line ends the command's output; Prefect may still log its server's shutdown
    # at interpreter exit (verbose only).
    tail = [
        ln for ln in verbose.stderr.strip().splitlines() if "Stopping temporary server" not in ln
    ]
    assert tail[-1] == err[0]


def test_prefect_session_mutes_console_logs_then_restores_handlers_and_env(tmp_path, monkeypatch):
    import logging

    from prefect.logging.configuration import ensure_logging_setup

    from zodi_cli._common import prefect_session

    for name in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_LOGGING_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    ensure_logging_setup()
    console = [  # console handlers; file handlers (mmengine's log files) are left as they are
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    assert console, "Prefect's logging config puts a console handler on the root logger"
    before = [h.level for h in console]
    with prefect_session(tmp_path, verbose=False):
        assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
        assert os.environ["PREFECT_HOME"] == str(tmp_path / ".prefect")
        assert all(h.level > logging.CRITICAL for h in console)
    assert [h.level for h in console] == before
    assert "PREFECT_HOME" not in os.environ and "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ
    with prefect_session(None, verbose=True):
        assert [h.level for h in console] == before  # --verbose: Prefect's logs are shown
        assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"  # telemetry off anyway
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")  # a user's own setting wins
    with prefect_session(None):
        assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"


def test_flow_failure_turns_a_failed_state_into_one_line_and_exit_code():
    from types import SimpleNamespace

    from zodi_cli._common import CLIError, RunFailed, flow_failure
    from zodi_core.config import ConfigError

    crashed = SimpleNamespace(name="Crashed", message="Execution was aborted by SIGTERM")
    err = flow_failure(crashed, None, {"transfer": {}})
    assert isinstance(err, RunFailed) and err.exit_code == 1
    assert str(err) == "flow run ended Crashed: Execution was aborted by SIGTERM"
    assert err.summary == {"transfer": {}}

    failed = SimpleNamespace(name="Failed", message="Flow run encountered an exception: ...")
    err = flow_failure(failed, RuntimeError("CUDA out of memory"))
    assert isinstance(err, RunFailed) and str(err) == "RuntimeError: CUDA out of memory"
    err = flow_failure(failed, ConfigError("storage.root: expected s3://bucket"))
    assert isinstance(err, CLIError) and err.exit_code == 2
    assert str(err) == "storage.root: expected s3://bucket"


def test_every_command_module_is_registered_statically():
    """Each zodi_cli module with add_parsers is in COMMAND_MODULES (a module that fails to import
    fails `import zodi_cli` itself: nothing is dropped silently) and adds at least one command."""
    import argparse

    import zodi_cli

    files = {
        p.stem for p in (REPO / "zodi_cli").glob("*.py") if "def add_parsers(" in p.read_text()
    }
    registered = {m.__name__.removeprefix("zodi_cli.") for m in zodi_cli.COMMAND_MODULES}
    assert registered == files
    for module in zodi_cli.COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        module.add_parsers(sub, argparse.ArgumentParser(add_help=False))
        assert sub.choices, module.__name__
    assert "import_module" not in (REPO / "zodi_cli" / "__init__.py").read_text()


RELATIVE_CONFIG = """\
preset: demo
source: {dataset: cityscapes, root: ../data/cityscapes, split: train}
targets:
  - {dataset: acdc, root: ../data/acdc, condition: night, split: val}
  - {dataset: gta5, root: /abs/gta5}
transfer:
  models: {base: models/tiny, controlnet: lllyasviel/control_v11p_sd15_seg}
train: {mmseg_config: ./my_seg.py}
quality: {clip: openai/clip-vit-base-patch32, seg_config: "mmseg::pspnet/pspnet_r50.py"}
storage: {root: artifacts}
"""


def _relative_config(tmp_path: Path) -> Path:
    """A config in tmp/exp/ with relative paths, and a folder tmp/elsewhere to run from."""
    (tmp_path / "exp" / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "exp" / "c.yaml"
    path.write_text(RELATIVE_CONFIG)
    return path


def _assert_resolved_against(config: dict, tmp_path: Path) -> None:
    """Relative local paths → absolute under the config's folder; hub ids, bundled and model-zoo
    config names, absolute paths and URIs unchanged."""
    exp = tmp_path / "exp"
    assert config["source"]["root"] == str(tmp_path / "data" / "cityscapes")
    assert [t["root"] for t in config["targets"]] == [str(tmp_path / "data" / "acdc"), "/abs/gta5"]
    assert config["transfer"]["models"]["base"] == str(exp / "models" / "tiny")
    assert config["transfer"]["models"]["controlnet"] == "lllyasviel/control_v11p_sd15_seg"
    assert config["train"]["mmseg_config"] == str(exp / "my_seg.py")
    assert config["quality"]["clip"] == "openai/clip-vit-base-patch32"
    assert config["quality"]["seg_config"] == "mmseg::pspnet/pspnet_r50.py"


def test_cli_pipeline_resolves_relative_paths_against_the_config_folder(
    tmp_path, monkeypatch, capsys
):
    import zodi_cli.pipeline

    seen = []
    monkeypatch.setattr(zodi_cli.pipeline, "_run", lambda config, *a, **k: seen.append(config))
    path = _relative_config(tmp_path)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["pipeline", "--config", str(path)]) == 0
    (config,) = seen
    _assert_resolved_against(config.model_dump(mode="json"), tmp_path)
    assert config.storage.root == str(tmp_path / "exp" / "artifacts")
    # Command-line options are relative to the current folder, as any option; URIs stay.
    assert main(["pipeline", "--config", str(path), "--storage", "out"]) == 0
    assert seen[-1].storage.root == str(tmp_path / "elsewhere" / "out")
    assert main(["pipeline", "--config", "../exp/c.yaml", "--storage", "s3://b/zodi"]) == 0
    assert seen[-1].storage.root == "s3://b/zodi"
    _assert_resolved_against(seen[-1].model_dump(mode="json"), tmp_path)


def test_cli_submit_sends_the_config_with_paths_resolved_against_its_folder(
    tmp_path, monkeypatch, capsys
):
    """The worker runs in another folder (the deployed checkout): the submitted parameters carry
    absolute paths, decided on the submitter's machine from the config file's folder."""
    import uuid
    from types import SimpleNamespace

    import prefect.client.orchestration
    import prefect.deployments
    from prefect.settings import PREFECT_API_URL, temporary_settings

    sent = []

    def run_deployment(name, parameters, timeout):
        sent.append((name, parameters))
        return SimpleNamespace(name="fake-run", id=uuid.uuid4())

    class Client:  # no server: the worker check is a warning only and fails quietly
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read_deployment_by_name(self, name):
            raise ConnectionError("no server in this test")

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    monkeypatch.setattr(prefect.client.orchestration, "get_client", lambda **kw: Client())
    _relative_config(tmp_path)
    monkeypatch.chdir(tmp_path / "elsewhere")
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["submit", "--config", "../exp/c.yaml"]) == 0
    ((deployment, params),) = sent
    assert deployment == "pipeline_flow/zodi-pipeline-local"
    _assert_resolved_against(params["config"], tmp_path)
    assert params["config"]["storage"]["root"] == str(tmp_path / "exp" / "artifacts")
    assert "[submit] flow run fake-run" in capsys.readouterr().out


def _run_record(logger: str, message: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord(logger, logging.INFO, __file__, 0, message, None, None)
    record.__dict__.update(extra)
    return record


def test_stage_lines_turn_prefect_run_records_into_one_line_per_stage_event():
    """What `zodi pipeline` and `zodi demo` print from Prefect's flow/task run records (the
    records Prefect's engine and our flows log, as they carry them: name, run id, task name)."""
    import io

    from zodi_cli.pipeline import StageLines
    from zodi_core.report import RunSummary

    out = io.StringIO()
    lines = StageLines(n_datasets=3, stream=out, interval_s=3600)
    flows, tasks = "prefect.flow_runs", "prefect.task_runs"

    def flow(name: str, run: str, message: str):
        lines.handle(_run_record(flows, message, flow_name=name, flow_run_id=run))

    def task(flow_name: str, run: str, name: str, task: str, state: str = "Completed()"):
        lines.handle(
            _run_record(
                tasks,
                f"Finished in state {state}",
                flow_name=flow_name,
                flow_run_id=run,
                task_name=task,
                task_run_name=name,
            )  # fmt: skip
        )

    flow("pipeline_flow", "p", "Beginning flow run 'a' for flow 'pipeline_flow'")
    flow("ingest_flow", "i", "Beginning subflow run 'b' for flow 'ingest_flow'")
    for n in range(3):
        task("ingest_flow", "i", f"ingest_dataset_task-{n}", "ingest_dataset_task")
    flow("transfer_flow", "t1", "Beginning subflow run 'c' for flow 'transfer_flow'")
    for i in range(3):  # throttled: the first shard, then the domain's summary
        task("transfer_flow", "t1", f"transfer-night-shard-{i}", "transfer_shard_task")
    task("transfer_flow", "t1", "transfer-night-shard-3", "transfer_shard_task", "Failed(...)")
    flow("transfer_flow", "t1", f"night: {RunSummary(['0', '1', '2'], [], {'3': 'x'}, 8).line()}")
    flow("transfer_flow", "t2", "Beginning subflow run 'd' for flow 'transfer_flow'")
    task("transfer_flow", "t2", "transfer-night-shard-0", "transfer_shard_task", "Cached(...)")
    flow("transfer_flow", "t2", f"night: {RunSummary([], ['0'], {}, 0, 4).line()}")
    flow("train_flow", "r1", "Beginning subflow run 'e' for flow 'train_flow'")
    task("train_flow", "r1", "train-source-only-seed0", "train_model_task")
    task("pipeline_flow", "p", "score-night", "score_paired_task", "Cached(type=COMPLETED)")
    flow("train_flow", "r2", "Beginning subflow run 'f' for flow 'train_flow'")
    task("train_flow", "r2", "train-zodi-night-seed0", "train_model_task")
    task("evaluate_flow", "e", "evaluate-zodi-night-seed0", "evaluate_checkpoint_task")
    task("pipeline_flow", "p", "render_sample_grid_task-1", "render_sample_grid_task")
    assert out.getvalue().splitlines() == [
        "[ingest] 1/3 datasets (Completed)",
        "[ingest] 2/3 datasets (Completed)",
        "[ingest] 3/3 datasets (Completed)",
        "[transfer] night: 1 shard(s) done (Completed)",
        "[transfer] night: 4 shard(s) done (Failed)",
        "[transfer] night: shards: 3 computed, 0 cached, 1 failed; images: 8 written, 0 skipped, "
        "0 failed",
        "[proxy] night: 1 shard(s) done (Cached)",
        "[proxy] night: shards: 0 computed, 1 cached, 0 failed; images: 0 written, 4 skipped, "
        "0 failed",
        "[train] source-only baseline",
        "[train] source-only seed 0: Completed",
        "[quality] night: scored (Cached)",
        "[train] ZoDi",
        "[train] zodi-night seed 0: Completed",
        "[evaluate] zodi-night-seed0: Completed",
    ]


def test_stage_lines_pass_info_records_then_restore_the_run_loggers():
    import io

    from zodi_cli.pipeline import RUN_LOGGERS, stage_lines

    loggers = [logging.getLogger(n) for n in RUN_LOGGERS]
    before = [(lg.level, list(lg.handlers)) for lg in loggers]
    prefect_logger = logging.getLogger("prefect")
    level = prefect_logger.level
    prefect_logger.setLevel(logging.WARNING)  # as PREFECT_LOGGING_LEVEL=WARNING sets it
    out = io.StringIO()
    try:
        with stage_lines(n_datasets=1, stream=out):
            logging.getLogger("prefect.task_runs").info(
                "Finished in state Completed()",
                extra={
                    "task_run_name": "ingest_dataset_task-x",
                    "task_name": "ingest_dataset_task",
                },
            )
        assert out.getvalue() == "[ingest] 1/1 datasets (Completed)\n"
        assert [(lg.level, list(lg.handlers)) for lg in loggers] == before
    finally:
        prefect_logger.setLevel(level)
