"""Regeneration tasks: read the prompt config, plan, publish the report. Never cached: a
regeneration run must see the current prompt config and manifests."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from tasks.artifacts import publish_markdown
from zodi_core import prompts, regeneration

#: ``prompt_config_uri`` of a prompt config held in a Prefect Variable: ``variable://<name>``.
VARIABLE_SCHEME = "variable://"


@task(cache_policy=NO_CACHE)
def load_prompt_config_task(prompt_config_uri: str) -> prompts.PromptConfig:
    """The prompt config in storage (path or ``s3://``), or in a Prefect Variable
    (``variable://<name>``, holding the YAML as a string or the mapping as JSON)."""
    if not prompt_config_uri.startswith(VARIABLE_SCHEME):
        return prompts.load_prompt_config(prompt_config_uri)
    name = prompt_config_uri.removeprefix(VARIABLE_SCHEME)
    value = Variable.get(name)
    if value is None:
        raise ValueError(
            f"prompt_config_uri: no Prefect Variable named {name!r}; create it with "
            f'`prefect variable set {name} "$(cat prompts.yaml)"` (zodi deploy creates an empty one)'
        )
    return prompts.PromptConfig.from_text(value, source=prompt_config_uri)


plan_regeneration_task = task(
    regeneration.plan_regeneration, name="plan_regeneration_task", cache_policy=NO_CACHE
)


@task(cache_policy=NO_CACHE)
def publish_regeneration_report_task(report: dict[str, Any]) -> str:
    """The report as the ``zodi-regeneration`` Markdown artifact (publishing it never fails the
    task); returns the Markdown."""
    markdown = regeneration.render_markdown(report)
    publish_markdown(
        "regeneration report",
        "zodi-regeneration",
        lambda: markdown,
        "Domains whose prompts changed (old and new settings), and what was regenerated",
    )
    return markdown
