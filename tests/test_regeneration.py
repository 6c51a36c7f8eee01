"""zodi_core.regeneration: which domains a regeneration run compares and regenerates, the
nothing-to-do-yet case, outcomes of failed transfers, and the report with old and new settings."""

from __future__ import annotations

import json

import pytest
from test_prompts import write_paired

from zodi_core import regeneration
from zodi_core.config import TransferConfig
from zodi_core.prompts import PromptConfig


def test_generated_domains_lists_the_paired_manifests(tmp_path):
    assert regeneration.generated_domains(str(tmp_path)) == []
    write_paired(tmp_path, "night", "driving at night, best quality", 0.9)
    write_paired(tmp_path, "fog", "driving in fog", 0.5)
    (tmp_path / "paired" / "domain=rain").mkdir()  # a folder without its manifest
    assert regeneration.generated_domains(str(tmp_path)) == ["fog", "night"]


def test_plan_right_after_deploy_is_empty_and_says_why(tmp_path):
    samples = str(tmp_path / "manifests" / "cityscapes-train.parquet")  # not written yet
    empty = PromptConfig()
    plan = regeneration.plan_regeneration(empty, TransferConfig(), None, str(tmp_path), samples)
    assert plan.jobs == [] and plan.statuses == [] and "nothing to compare" in plan.note

    listed = PromptConfig.from_text("domains: {fog: {prompt: driving in fog}}")
    plan = regeneration.plan_regeneration(listed, TransferConfig(), None, str(tmp_path), samples)
    assert plan.jobs == [] and plan.statuses == []
    assert f"nothing generated under {tmp_path} yet" in plan.note and samples in plan.note
    report = regeneration.build_report(plan, [])
    assert report["changed"] == [] and report["regenerated"] == {} and report["failed"] == {}
    assert plan.note in regeneration.render_markdown(report)
    assert plan.note in regeneration.summary_line(report)


def test_plan_compares_generated_and_listed_domains(tmp_path):
    write_paired(tmp_path, "night", "driving at night, best quality", 0.9)
    write_paired(tmp_path, "rain", "driving in rain", 0.7)
    prompts = PromptConfig.from_text(
        "version: 2\ndomains: {fog: {prompt: driving in fog}, rain: {prompt: driving in rain, "
        "strength: 0.7, negative_prompt: 'lower quality, worst quality'}}"
    )
    base = TransferConfig.preset("demo")
    # The samples manifest need not exist: something was generated, so the root is in use.
    plan = regeneration.plan_regeneration(prompts, base, None, str(tmp_path), "missing.parquet")
    assert [s.domain for s in plan.statuses] == ["fog", "night", "rain"]
    assert [s.status for s in plan.statuses] == ["missing", "unchanged", "unchanged"]
    (job,) = plan.jobs
    assert job.domain == "fog" and job.effective_prompt == "driving in fog"
    assert job.num_inference_steps == base.num_inference_steps  # the base, prompt applied
    # Given domains are compared as given.
    plan = regeneration.plan_regeneration(prompts, base, ["night"], str(tmp_path), "x.parquet")
    assert [s.domain for s in plan.statuses] == ["night"] and plan.jobs == []


def test_report_shows_old_and_new_settings_and_the_real_error(tmp_path):
    write_paired(tmp_path, "night", "driving at night, best quality", 0.9)
    write_paired(tmp_path, "fog", "driving in fog | mist", 0.6)
    prompts = PromptConfig.from_text(
        "version: 5\ndomains:\n  night: {prompt: driving at night under street lights}\n"
        "  fog: {prompt: driving in dense fog, strength: 0.5}\n"
    )
    plan = regeneration.plan_regeneration(
        prompts, TransferConfig(), None, str(tmp_path), "samples.parquet"
    )
    assert [j.domain for j in plan.jobs] == ["fog", "night"]
    error = ValueError("samples_uri: no samples manifest at samples.parquet")
    outcomes = [
        # A failed run's result is the exception it raised: never indexed, its message kept.
        regeneration.DomainOutcome.of("fog", False, f"Flow run encountered: {error}", error),
        regeneration.DomainOutcome.of(
            "night", True, None,
            {"domains": {"night": {"images_written": 2}}, "paired": {"night": "p.parquet"}},
        ),
    ]  # fmt: skip
    report = regeneration.build_report(plan, outcomes)
    assert report["regenerated"] == {"night": "p.parquet"}
    assert report["failed"] == {"fog": "Flow run encountered: " + str(error)}
    assert report["transfer"] == {"night": {"images_written": 2}}
    json.dumps(report)  # JSON-able: a Prefect result and an artifact
    (fog,) = [s for s in report["statuses"] if s["domain"] == "fog"]
    assert fog["old"] == [
        {"prompt": "driving in fog | mist", "negative_prompt": "lower quality, worst quality",
         "strength": 0.6}
    ]  # fmt: skip
    assert fog["new"]["prompt"] == "driving in dense fog" and fog["new"]["strength"] == 0.5

    markdown = regeneration.render_markdown(report)
    assert "prompt config version 5" in markdown
    (fog_row,) = [line for line in markdown.splitlines() if line.startswith("| fog |")]
    assert "'driving in fog \\| mist', S=0.6" in fog_row  # old settings, pipe escaped
    assert "'driving in dense fog', S=0.5" in fog_row and "FAILED: Flow run encountered" in fog_row
    (night_row,) = [line for line in markdown.splitlines() if line.startswith("| night |")]
    assert "'driving at night, best quality', S=0.9" in night_row
    assert "'driving at night under street lights'" in night_row and night_row.endswith("| yes |")
    assert "failed ['fog']" in regeneration.summary_line(report)


def test_prompt_config_from_value_reads_text_and_mappings():
    from_text = PromptConfig.from_text("version: 3\ndomains: {fog: {strength: 0.5}}", "v://p")
    from_map = PromptConfig.from_text({"version": 3, "domains": {"fog": {"strength": 0.5}}}, "v")
    assert from_text == from_map and from_map.version == "3"
    with pytest.raises(ValueError, match=r"(?s)prompt config v://p: .*domains\.fog\.strength"):
        PromptConfig.from_text({"domains": {"fog": {"strength": 2.0}}}, "v://p")


def test_recorded_transfer_config_is_the_last_generations_without_its_prompts(tmp_path):
    from zodi_core import layout, manifest

    assert regeneration.recorded_transfer_config(str(tmp_path), "night") is None
    paired = write_paired(tmp_path, "night", "driving at night, old", 0.5)  # config_digest "abc"
    assert regeneration.recorded_transfer_config(str(tmp_path), "night") is None  # no shard
    used = TransferConfig.preset(
        "demo", domain="night", prompt="driving at night, old", strength=0.5,
        negative_prompt="blurry", models={"base": "/models/tiny", "controlnet": None},
    )  # fmt: skip
    rows = manifest.read_manifest(paired, "transfer").to_pylist()
    for digest in ("zzz", "abc"):  # another generation's shard, then this one's
        config = used.replace(num_inference_steps=3) if digest == "zzz" else used
        key = layout.shard_manifest_key("night", "shard-00000", "d0", digest)
        manifest.write_manifest(
            rows, layout.uri(str(tmp_path), key), "transfer",
            extra_metadata={"transfer_config": config.model_dump_json()},
        )  # fmt: skip

    recorded = regeneration.recorded_transfer_config(str(tmp_path), "night")
    defaults = TransferConfig()
    assert recorded.models.base == "/models/tiny"
    assert recorded.num_inference_steps == used.num_inference_steps  # this generation's shard
    assert (recorded.prompt, recorded.strength, recorded.negative_prompt) == (
        defaults.prompt, defaults.strength, defaults.negative_prompt
    )  # fmt: skip
    # transfer=None in a plan: the recorded settings, with the prompt config's prompts.
    prompts = PromptConfig.from_text("domains: {night: {prompt: 'driving at night, new'}}")
    plan = regeneration.plan_regeneration(prompts, None, None, str(tmp_path), "x.parquet")
    (job,) = plan.jobs
    assert job.models.base == "/models/tiny"
    assert job.effective_prompt == "driving at night, new"
    assert regeneration.base_transfer_config(used, ["night"], str(tmp_path)) is used
    assert regeneration.base_transfer_config(None, [], str(tmp_path)) == TransferConfig()
