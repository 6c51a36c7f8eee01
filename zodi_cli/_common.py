"""Helpers shared by the ``zodi`` subcommand modules: the user-error type, demo set-up, polling.

Nothing here imports a heavy library at import time; ``zodi --help`` imports this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """A user error the CLI reports as one line, exit code 2."""


def prepare_demo(workdir: Path, seed: int = 0, log: Callable[[str], None] | None = None):
    """Write the demo's synthetic data and tiny models under ``workdir`` (models reused).

    Returns ``(data, models_dir)``: the dataset roots by name and the tiny models' folder.
    """
    from zodi_core.datasets.synth import write_synthetic
    from zodi_core.transfer.models import write_tiny_models

    say = log or (lambda _msg: None)
    say(f"1/3 synthetic data → {workdir / 'data'}")
    data = write_synthetic(workdir / "data", seed=seed)
    models_dir = workdir / "models" / "tiny-sd15-controlnet"
    if not (models_dir / "model_index.json").exists():
        say(f"2/3 tiny models → {models_dir}")
        write_tiny_models(models_dir)
    else:
        say(f"2/3 tiny models: reusing {models_dir}")
    return data, models_dir


def demo_config(workdir: Path, data: dict[str, Any], models_dir: Path, domains: list[str]):
    """The demo's PipelineConfig: synthetic roots, tiny models, local storage under workdir."""
    from zodi_core.config import DatasetSpec, PipelineConfig

    return PipelineConfig.preset(
        "demo",
        source=DatasetSpec(dataset="cityscapes", root=data["cityscapes"], split="train"),
        source_val=DatasetSpec(dataset="cityscapes", root=data["cityscapes"], split="val"),
        targets=[
            DatasetSpec(dataset="acdc", root=data["acdc"], condition=d, split="val")
            for d in domains
            if d != "game"
        ]
        + ([DatasetSpec(dataset="gta5", root=data["gta5"])] if "game" in domains else []),
        domains=domains,
        storage={"root": str(workdir / "artifacts")},
        transfer={"models": {"base": str(models_dir), "controlnet": None}},
    )


def poll(
    read: Callable[[], Any],
    done: Callable[[Any], bool],
    *,
    timeout: float,
    interval: float = 2.0,
    what: str = "the run",
    on_change: Callable[[Any], None] | None = None,
) -> Any:
    """Call ``read()`` every ``interval`` seconds until ``done(value)``; return that value.

    ``on_change(value)`` is called whenever the value differs from the previous one (state
    changes, for progress lines). Raises :class:`CLIError` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    previous: Any = object()
    while True:
        value = read()
        if on_change is not None and value != previous:
            on_change(value)
            previous = value
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise CLIError(f"{what} not finished after {timeout:.0f} s (--timeout)")
        time.sleep(interval)
