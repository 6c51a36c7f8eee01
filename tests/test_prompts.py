"""Versioned prompt config: parsing, effective values, digests, and which domains changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from zodi_core import layout, manifest
from zodi_core.config import ConfigError, TransferConfig
from zodi_core.prompts import PromptConfig, PromptValues, compare_prompts, load_prompt_config
from zodi_core.transfer.sampler import sample_seed

PROMPTS_YAML = """\
version: 7
domains:
  night:
    prompt: "driving at night, best quality"
  fog:
    prompt: "driving in dense fog, best quality"
    strength: 0.55
"""


def write_paired(
    root: Path,
    domain: str,
    prompt: str,
    strength: float,
    n: int = 2,
    negative: str = "lower quality, worst quality",
    seed: int = TransferConfig().seed,
) -> str:
    """A paired manifest of ``n`` rows recording these prompt settings and each image's seed
    from the effective ``seed`` (what transfer writes)."""
    rows = [
        {
            "sample_id": f"s{i}", "domain": domain, "source_uri": f"/src/{i}.png",
            "label_uri": f"/lab/{i}.png", "label_format": "label_ids", "generated_uri": f"/gen/{i}.png",
            "prompt": prompt, "negative_prompt": negative, "strength": strength,
            "seed": sample_seed(seed, f"s{i}"), "k": 18,
            "first_timestep": 900, "palette": "ade20k", "method": "zodi", "model_revisions": "{}",
            "config_digest": "abc", "status": "ok", "error": None, "seconds": 0.1,
        }
        for i in range(n)
    ]  # fmt: skip
    return manifest.write_manifest(rows, layout.paired_manifest_uri(str(root), domain), "transfer")


def test_prompt_config_transfer_config_applies_only_given_fields():
    prompts = PromptConfig.from_text(PROMPTS_YAML)
    base = TransferConfig.preset("demo", negative_prompt="blurry")
    fog = prompts.transfer_config(base, "fog")
    assert (fog.domain, fog.effective_prompt, fog.effective_strength) == (
        "fog", "driving in dense fog, best quality", 0.55,
    )  # fmt: skip
    assert fog.negative_prompt == "blurry" and fog.num_inference_steps == base.num_inference_steps
    # A domain the config does not list keeps the defaults of SPEC §2.
    snow = prompts.transfer_config(base, "snow")
    assert (snow.effective_prompt, snow.effective_strength) == (
        "driving in snow, best quality",
        0.65,
    )
    assert prompts.version == "7"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("domains: {night: {prompt: ''}}", "non-empty prompt"),
        ("domains: {dusk: {strength: 0.5}}", "domains.dusk: domain: 'dusk' has no prompt"),
        ("domains: {Dusk: {prompt: x}}", "domain name: expected"),
        ("domains: {fog: {strength: 1.5}}", "strength in (0, 1]"),
        ("domains: {fog: {prompt: x, colour: red}}", "unknown key"),
        ("- just a list", "expected a mapping"),
        ("domains: [unclosed", "not valid YAML"),
    ],
)
def test_prompt_config_rejects_bad_input_naming_it(text, message):
    with pytest.raises(ConfigError, match="prompt config <text>") as err:
        PromptConfig.from_text(text)
    assert message in str(err.value)


def test_load_prompt_config_missing_file_names_the_uri(tmp_path):
    with pytest.raises(FileNotFoundError, match="prompt_config_uri"):
        load_prompt_config(str(tmp_path / "nope.yaml"))


def test_prompt_values_digest_is_stable_and_sensitive():
    a = PromptValues("driving at night", "bad", 0.9)
    assert a.digest() == PromptValues("driving at night", "bad", 0.9).digest()
    # The manifest stores strength as float32: 0.9 reads back as 0.8999999762; same digest.
    assert a.digest() == PromptValues("driving at night", "bad", 0.8999999762).digest()
    assert a.digest() != PromptValues("driving at night!", "bad", 0.9).digest()
    assert a.digest() != PromptValues("driving at night", "worse", 0.9).digest()
    assert a.digest() != PromptValues("driving at night", "bad", 0.8).digest()


def test_compare_prompts_finds_changed_unchanged_and_missing(tmp_path):
    prompts = PromptConfig.from_text(PROMPTS_YAML)
    base = TransferConfig.preset("demo")
    write_paired(tmp_path, "night", "driving at night, best quality", 0.9)  # as configured
    write_paired(tmp_path, "fog", "driving in fog, best quality", 0.6)  # the old default

    statuses = {
        s.domain: s for s in compare_prompts(prompts, base, ["night", "fog", "rain"], str(tmp_path))
    }
    assert statuses["night"].status == "unchanged" and not statuses["night"].needs_regeneration
    assert statuses["fog"].status == "changed" and statuses["fog"].needs_regeneration
    assert statuses["fog"].recorded[0].prompt == "driving in fog, best quality"
    assert statuses["fog"].wanted.prompt == "driving in dense fog, best quality"
    assert statuses["fog"].recorded_digests != (statuses["fog"].wanted_digest,)
    assert statuses["rain"].status == "missing" and statuses["rain"].recorded == ()
    assert "changed" in statuses["fog"].line() and "dense fog" in statuses["fog"].line()
    assert statuses["fog"].to_dict()["needs_regeneration"] is True


def test_compare_prompts_negative_prompt_change_counts(tmp_path):
    prompts = PromptConfig.from_text("domains: {night: {negative_prompt: 'blurry'}}")
    write_paired(tmp_path, "night", "driving at night, best quality", 0.9)
    (status,) = compare_prompts(prompts, TransferConfig(), None, str(tmp_path))
    assert status.domain == "night" and status.status == "changed"


def test_compare_prompts_mixed_manifest_counts_as_changed(tmp_path):
    # Rows generated with two different prompts (a domain regenerated piecemeal).
    uri = write_paired(tmp_path, "night", "driving at night, best quality", 0.9)
    table = manifest.read_manifest(uri, "transfer").to_pylist()
    table[0]["prompt"] = "driving at dusk"
    manifest.write_manifest(table, uri, "transfer")
    prompts = PromptConfig.from_text(PROMPTS_YAML)
    (status,) = compare_prompts(prompts, TransferConfig(), ["night"], str(tmp_path))
    assert status.status == "changed" and len(status.recorded) == 2


def test_compare_prompts_without_domains_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="domains: expected at least one"):
        compare_prompts(PromptConfig(), TransferConfig(), None, str(tmp_path))


def test_compare_prompts_sees_a_changed_seed_offset(tmp_path):
    """Same prompt, strength and negative prompt, but the prompt config moves the domain to
    another seed stream: every image would get other noise, so the domain changed."""
    base = TransferConfig()
    write_paired(tmp_path, "night", "driving at night, best quality", 0.9, n=3)
    same = PromptConfig.from_text("domains: {night: {strength: 0.9}}")
    (status,) = compare_prompts(same, base, ["night"], str(tmp_path))
    assert status.status == "unchanged" and status.seeds_changed == 0

    moved = PromptConfig.from_text("domains: {night: {strength: 0.9, seed_offset: 1000}}")
    (status,) = compare_prompts(moved, base, ["night"], str(tmp_path))
    assert status.status == "changed" and status.seeds_changed == 3
    assert "seed" in status.line() and status.to_dict()["seeds_changed"] == 3

    # Rows generated on that stream are what the moved config wants.
    write_paired(
        tmp_path, "night", "driving at night, best quality", 0.9, n=3, seed=base.seed + 1000
    )
    (status,) = compare_prompts(moved, base, ["night"], str(tmp_path))
    assert status.status == "unchanged"
