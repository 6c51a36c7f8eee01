"""deploy() on the test session's Prefect server, ``prefect deploy`` itself stubbed (the slow
tests in test_deployments run it for real): pools and the prompts Variable are created once, then
reported unchanged; a Variable a person edited keeps its value."""

from __future__ import annotations


def test_deploy_creates_the_prompts_variable_once_and_keeps_an_edited_one(
    prefect_harness, monkeypatch
):
    from prefect.variables import Variable

    from deployments import deploy as d

    monkeypatch.setattr(d, "deploy_deployments", lambda only, **kwargs: [f"stub-{only}"])
    Variable.unset(d.PROMPTS_VARIABLE)
    first = d.deploy(only="local")
    assert list(first) == ["api_url", "pools", "blocks", "variables", "deployments", "automations"]
    assert first["pools"] in ({"zodi-local": "created"}, {"zodi-local": "unchanged"})
    assert first["variables"] == {d.PROMPTS_VARIABLE: "created"}
    assert Variable.get(d.PROMPTS_VARIABLE) == d.EMPTY_PROMPTS
    assert first["blocks"] == [] and first["deployments"] == ["stub-local"]

    edited = "version: '1'\ndomains: {}\n"
    Variable.set(d.PROMPTS_VARIABLE, edited, overwrite=True)
    second = d.deploy(only="local")
    assert second["pools"] == {"zodi-local": "unchanged"}
    assert second["variables"] == {d.PROMPTS_VARIABLE: "unchanged"}
    assert second["automations"] == {d.ZOMBIE_AUTOMATION: "unchanged"}
    assert Variable.get(d.PROMPTS_VARIABLE) == edited
