"""User-defined target domains (issue 12 §1): names, prompts, several prompts per domain, the
prompt config, the pipeline config, the CLI, and real targets paired by their explicit domain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures_models import tiny_transfer_config

from zodi_cli import main
from zodi_core import layout, runs
from zodi_core.config import (
    TRANSFER_SPEED_LEVERS,
    ConfigError,
    DatasetSpec,
    PipelineConfig,
    TransferConfig,
    choose_prompt,
    config_digest,
)
from zodi_core.datasets.ingest import ingest_dataset
from zodi_core.manifest import read_manifest
from zodi_core.prompts import PromptConfig, compare_domain
from zodi_core.regeneration import recorded_domain_settings, recorded_transfer_config
from zodi_core.report import render_report_markdown
from zodi_core.transfer.lineage import transfer_digest
from zodi_core.transfer.runner import transfer_manifest
from zodi_core.transfer.sampler import TransferSampler, sample_seed

BAD_NAMES = ["../x", "Dusk Storm", "a/b", "", "-dusk", "dusk.", "x" * 65]
DUSK = ("driving at dusk, best quality", "driving at sunset, best quality", "dusk, wet road")


@pytest.fixture(scope="module")
def samples_manifest(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("manifests") / "cityscapes-val.parquet"
    spec = DatasetSpec(dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="val")
    ingest_dataset(spec, str(out), progress=False)
    return str(out)


# 1. names and prompts ------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_domain_names_are_refused_everywhere_with_the_rule(name):
    rule = "lowercase letters, digits, '-' and '_'"
    for build in (
        lambda: TransferConfig(domain=name, prompt="p"),
        lambda: PipelineConfig(domains=(name,)),
        lambda: DatasetSpec(dataset="cityscapes", root="r", domain=name),
        lambda: TransferConfig(domain_settings={name: {"prompt": "p"}}),
    ):
        with pytest.raises(ConfigError, match="domain name: expected") as err:
            build()
        assert rule in str(err.value)
    with pytest.raises(ConfigError, match="domain name: expected"):
        PromptConfig.from_text(json.dumps({"domains": {name: {"prompt": "p"}}}))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_cli_refuses_a_bad_domain_name_in_one_line(name, capsys):
    argv = ["transfer", "--manifest", "m", f"--domain={name}", "--prompt", "p", "--out", "o"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"zodi transfer: error: argument --domain: {name!r}: domain name: ")


def test_builtin_domains_keep_the_papers_prompts_and_strengths():
    night = TransferConfig(domain="night")
    assert night.effective_prompt == "driving at night, best quality"
    assert night.effective_strength == 0.9
    assert TransferConfig(domain="fog").effective_strength == 0.6
    assert night.resolved() is night  # nothing to fold in


def test_a_user_domain_is_valid_once_it_has_a_prompt_and_the_error_names_it():
    with pytest.raises(ConfigError, match="domain: 'dusk' has no prompt"):
        TransferConfig(domain="dusk")
    dusk = TransferConfig(domain="dusk", prompt="driving at dusk", strength=0.7)
    assert (dusk.effective_prompt, dusk.effective_strength) == ("driving at dusk", 0.7)
    defined = TransferConfig(
        domain_settings={
            "dusk": {"prompt": "driving at dusk", "negative_prompt": "blur", "seed_offset": 5}
        }
    ).replace(domain="dusk")
    assert defined.effective_negative_prompt == "blur" and defined.effective_seed == 47
    resolved = defined.resolved()
    assert (resolved.prompt, resolved.negative_prompt, resolved.seed) == (
        "driving at dusk",
        "blur",
        47,
    )
    assert resolved.domain_settings == {} and resolved.resolved() == resolved


def test_pipeline_config_accepts_defined_user_domains_and_names_undefined_ones(tmp_path):
    with pytest.raises(ConfigError, match="domains: 'dusk' has no prompt"):
        PipelineConfig(domains=("night", "dusk"))
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "preset: demo\n"
        "domains: [night, dusk]\n"
        "transfer:\n"
        "  domain_settings:\n"
        "    dusk: {prompts: ['driving at dusk', 'driving at sunset'], strength: 0.7}\n"
        "targets:\n"
        "  - {dataset: cityscapes, root: data/my-dusk, split: val, domain: dusk}\n"
    )
    config = PipelineConfig.from_yaml(path)
    assert config.domains == ("night", "dusk")
    dusk = config.transfer.replace(domain="dusk")
    assert dusk.effective_prompts == ("driving at dusk", "driving at sunset")
    assert dusk.effective_strength == 0.7
    assert config.targets[0].target_domain == "dusk"
    assert PipelineConfig.from_yaml(path) == config  # round trip is stable
    reloaded = tmp_path / "again.yaml"
    reloaded.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert PipelineConfig.from_yaml(reloaded) == config


def test_dataset_spec_domain_defaults_from_the_dataset():
    acdc = DatasetSpec(dataset="acdc", root="r", condition="fog")
    assert acdc.target_domain == "fog"
    assert DatasetSpec(dataset="gta5", root="r").target_domain == "game"
    assert DatasetSpec(dataset="cityscapes", root="r").target_domain is None
    assert DatasetSpec(
        dataset="acdc", root="r", condition="night", domain="dusk"
    ).target_domain == ("dusk")


def test_a_domains_settings_do_not_change_another_domains_digest():
    night = TransferConfig(domain="night")
    with_dusk = night.replace(domain_settings={"dusk": {"prompt": "driving at dusk"}})
    assert transfer_digest(with_dusk) == transfer_digest(night)
    # single-prompt configs digest as before the new fields existed (speed levers never enter)
    old = night.model_dump(
        mode="json",
        exclude={"prompts", "seed_offset", "domain_settings", *TRANSFER_SPEED_LEVERS},
    )
    assert transfer_digest(night) == config_digest(old)
    assert transfer_digest(night.replace(prompts=("a", "b"), prompt=None)) != transfer_digest(night)


# 2. several prompts --------------------------------------------------------------------------


def test_choose_prompt_is_a_function_of_the_seed():
    seeds = [sample_seed(42, f"frame_{i}") for i in range(40)]
    picks = [choose_prompt(DUSK, s) for s in seeds]
    assert picks == [choose_prompt(DUSK, s) for s in seeds]
    assert set(picks) == set(DUSK)  # 40 images use all three
    assert choose_prompt(("only",), 123) == "only"
    with pytest.raises(ValueError, match="at least one prompt"):
        choose_prompt((), 1)
    with pytest.raises(ConfigError, match="not both"):
        TransferConfig(domain="dusk", prompt="a", prompts=("b",))


def test_multi_prompt_transfer_records_each_images_prompt_and_is_batch_invariant(
    samples_manifest, tiny_models_dir, tiny_components, tmp_path
):
    # seed 0: the 4 synthetic val images pick prompts 2, 1, 0, 0 (seed 42 happens to pick 0 x4)
    base = tiny_transfer_config(tiny_models_dir, strength=1.0, seed=0)
    config = base.replace(domain_settings={"dusk": {"prompts": list(DUSK)}}).replace(domain="dusk")
    a = transfer_manifest(
        samples_manifest, config.replace(batch_size=3), str(tmp_path / "a"),
        components=tiny_components, progress=False,
    )  # fmt: skip
    b = transfer_manifest(
        samples_manifest, config.replace(batch_size=1), str(tmp_path / "b"),
        components=tiny_components, progress=False,
    )  # fmt: skip
    assert a.failed == 0 and len(a.rows) >= 2
    for row in a.rows:
        assert row["domain"] == "dusk"
        assert row["prompt"] == choose_prompt(DUSK, row["seed"])
        assert row["seed"] == sample_seed(config.seed, row["sample_id"])
    assert [r["prompt"] for r in a.rows] == [r["prompt"] for r in b.rows]
    assert len({r["prompt"] for r in a.rows}) == 3  # every prompt used
    from zodi_core.datasets.io import read_image

    for ra, rb in zip(a.rows, b.rows, strict=True):
        np.testing.assert_allclose(
            read_image(ra["generated_uri"]).astype(int), read_image(rb["generated_uri"]), atol=2
        )
    # the sampler gives each image its own prompt: one image alone matches it inside the batch
    sampler = TransferSampler(tiny_components, config)
    from zodi_core.datasets.io import read_label

    rows = read_manifest(samples_manifest, "samples").to_pylist()[:3]
    images = [read_image(r["image_uri"]) for r in rows]
    labels = [read_label(r["label_uri"], r["label_format"]) for r in rows]
    ids = [r["sample_id"] for r in rows]
    together = sampler(images, labels, ids)
    alone = sampler(images[-1:], labels[-1:], ids[-1:])
    assert together[-1].metadata["prompt"] == alone[0].metadata["prompt"]
    np.testing.assert_allclose(together[-1].image.astype(int), alone[0].image, atol=2)


# 3. the prompt config ------------------------------------------------------------------------


def test_prompt_config_defines_a_user_domain_and_detects_a_prompt_list_change(
    samples_manifest, tiny_models_dir, tiny_components, tmp_path
):
    root = str(tmp_path / "root")
    base = tiny_transfer_config(tiny_models_dir, strength=1.0)
    prompts = PromptConfig.from_text(
        "version: 1\ndomains:\n  dusk:\n"
        f"    prompts: {json.dumps(list(DUSK))}\n    strength: 0.8\n    seed_offset: 1000\n"
    )
    assert compare_domain(prompts, base, "dusk", root).status == "missing"
    config = prompts.transfer_config(base, "dusk")
    assert config.effective_strength == 0.8 and config.effective_seed == base.seed + 1000
    result = transfer_manifest(
        samples_manifest, config, root, components=tiny_components, progress=False
    )
    assert result.manifest_uri == layout.paired_manifest_uri(root, "dusk")
    for row in result.rows:
        assert row["seed"] == sample_seed(base.seed + 1000, row["sample_id"])
        assert row["prompt"] == choose_prompt(DUSK, row["seed"]) and row["strength"] == 0.8
    assert compare_domain(prompts, base, "dusk", root).status == "unchanged"
    # The recording gives back the base seed and the domain's offset, not their sum.
    assert recorded_transfer_config(root, "dusk").seed == base.seed
    assert recorded_domain_settings(root, "dusk").seed_offset == 1000
    # A change of the seed offset alone moves every image to other noise: changed.
    moved = PromptConfig.from_text(
        "version: 1b\ndomains:\n  dusk:\n"
        f"    prompts: {json.dumps(list(DUSK))}\n    strength: 0.8\n    seed_offset: 7\n"
    )
    status = compare_domain(moved, base, "dusk", root)
    assert status.status == "changed" and status.seeds_changed == len(result.rows)
    # one more prompt re-assigns images: changed; the same list again: unchanged
    more = PromptConfig.from_text(
        "version: 2\ndomains:\n  dusk:\n"
        f"    prompts: {json.dumps([*DUSK, 'dusk, fog'])}\n    strength: 0.8\n"
    )
    assert compare_domain(more, base, "dusk", root).status == "changed"
    # a prompt config entry overrides the pipeline's own definition of the domain
    pipeline_transfer = base.replace(domain_settings={"dusk": {"prompt": "x", "strength": 0.3}})
    merged = prompts.transfer_config(pipeline_transfer, "dusk")
    assert merged.effective_prompts == DUSK and merged.effective_strength == 0.8


# 4. the CLI ----------------------------------------------------------------------------------


def test_cli_transfers_to_a_user_domain_described_by_a_prompt(
    samples_manifest, tiny_models_dir, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = [
        "transfer", "--manifest", samples_manifest, "--domain", "dusk",
        "--prompt", "driving at dusk", "--strength", "0.7",
        "--models", str(tiny_models_dir), "--preset", "demo", "--steps", "2",
        "--out", str(out), "--json",
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["failed"] == 0 and summary["written"] > 0
    table = read_manifest(layout.paired_manifest_uri(str(out), "dusk"), "transfer")
    assert set(table.column("domain").to_pylist()) == {"dusk"}
    assert set(table.column("prompt").to_pylist()) == {"driving at dusk"}
    assert {round(s, 4) for s in table.column("strength").to_pylist()} == {0.7}
    # without a prompt a user domain is refused in one line naming it
    no_prompt = [a for a in argv if a not in ("--prompt", "driving at dusk")]
    assert main(no_prompt[:-1]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--domain dusk: not a built-in domain" in err


def test_cli_several_prompts_each_image_takes_the_one_its_seed_picks(
    samples_manifest, tiny_models_dir, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = [
        "transfer", "--manifest", samples_manifest, "--domain", "dusk", *sum(
            (["--prompt", p] for p in DUSK), []),
        "--models", str(tiny_models_dir), "--preset", "demo", "--steps", "2",
        "--out", str(out), "--json",
    ]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    rows = read_manifest(layout.paired_manifest_uri(str(out), "dusk"), "transfer").to_pylist()
    assert rows and all(r["prompt"] == choose_prompt(DUSK, r["seed"]) for r in rows)
    assert main([*argv[:-1], "--prompt", " "]) == 2  # an empty one among them: one line
    assert "--prompt: expected a non-empty prompt" in capsys.readouterr().err


def test_cli_preview_accepts_a_user_domain(synthetic_root, tiny_models_dir, tmp_path, capsys):
    images = sorted((synthetic_root / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))
    labels = sorted((synthetic_root / "cityscapes" / "gtFine" / "val").rglob("*_labelIds.png"))
    out = tmp_path / "sheet.png"
    argv = [
        "preview", "--image", str(images[0]), "--label", str(labels[0]),
        "--domain", "dust-storm", "--prompt", "driving in a dust storm",
        "--strengths", "0.5,1.0", "--models", str(tiny_models_dir),
        "--preset", "demo", "--steps", "2", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert out.exists() and "[preview] dust-storm" in capsys.readouterr().out


# 5. real targets pair by their explicit domain; the report -----------------------------------


def test_real_targets_pair_with_proxies_by_explicit_domain_and_the_report_shows_them():
    spec = DatasetSpec(dataset="cityscapes", root="data/my-dusk", split="val", domain="dusk")
    models = {
        "zodi-dusk": [{"checkpoint": "/z.pth", "seed": 0, "domain": "dusk", "mmseg_config": "m"}]
    }
    jobs = runs.plan_evaluations(
        models, ["/t/my-dusk.parquet"], {"dusk": "/p/dusk.parquet"},
        target_domains={"/t/my-dusk.parquet": spec.target_domain},
    )  # fmt: skip
    (job,) = jobs
    assert job.target_domains == ("dusk",) and job.proxy_domain == "dusk"
    # the target's name (from its manifest) does not contain the domain: only the field pairs it
    results = [{"report_md": "r", "targets": {"cityscapes-source-val": 31.0, "proxy-dusk": 29.0}}]
    collected = runs.collect_evaluations(jobs, results)
    assert collected["zodi-dusk"]["proxy"]["dusk"] == {"mIoU": 29.0, "real_mIoU": 31.0}
    md = render_report_markdown({"results": collected})
    assert "| zodi-dusk | dusk | 29.0 | 31.0 |" in md
    # a target of another domain is not paired even when its name mentions the proxy's domain
    jobs = runs.plan_evaluations(
        models, ["/t/x.parquet"], {"dusk": "/p/dusk.parquet"},
        target_domains={"/t/x.parquet": "night"},
    )  # fmt: skip
    results = [{"report_md": "r", "targets": {"acdc-dusk-val": 31.0, "proxy-dusk": 29.0}}]
    assert (
        runs.collect_evaluations(jobs, results)["zodi-dusk"]["proxy"]["dusk"]["real_mIoU"] is None
    )


def test_tune_strength_needs_a_prompt_for_a_user_domain_in_one_line(capsys):
    argv = ["tune-strength", "--manifest", "m", "--domain", "dusk", "--out", "o"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--domain dusk: not a built-in domain" in err


def test_regeneration_keeps_a_pipeline_user_domain_the_prompt_config_does_not_list(
    samples_manifest, tiny_models_dir, tiny_components, tmp_path
):
    from zodi_core import manifest, regeneration

    root = str(tmp_path / "root")
    base = tiny_transfer_config(tiny_models_dir, strength=1.0, seed=0)
    config = base.replace(domain_settings={"dusk": {"prompts": list(DUSK)}}).replace(domain="dusk")
    result = transfer_manifest(
        samples_manifest, config, root, components=tiny_components, progress=False
    )
    # the shard manifest of this generation records the (resolved) transfer config, as flows do
    key = layout.shard_manifest_key("dusk", "shard-00000", "d0", result.config_digest)
    manifest.write_manifest(
        result.rows, layout.uri(root, key), "transfer",
        extra_metadata={"transfer_config": config.resolved().model_dump_json()},
    )  # fmt: skip
    settings = regeneration.recorded_domain_settings(root, "dusk")
    assert settings.prompts == DUSK  # in their order: each row's choice depends on it
    # a prompt config that does not list dusk: dusk is compared with its own recording
    plan = regeneration.plan_regeneration(PromptConfig(), None, None, root, samples_manifest)
    assert [(s.domain, s.status) for s in plan.statuses] == [("dusk", "unchanged")]
    assert plan.jobs == []
    # one that changes it: dusk is regenerated with the new prompt
    new = PromptConfig.from_text("domains: {dusk: {prompt: 'driving at dusk, rain'}}")
    plan = regeneration.plan_regeneration(new, None, None, root, samples_manifest)
    (job,) = plan.jobs
    assert job.domain == "dusk" and job.effective_prompts == ("driving at dusk, rain",)


def test_preview_sweeps_strength_even_when_the_domain_sets_its_own(
    samples_manifest, tiny_models_dir, tiny_components
):
    from zodi_core.datasets.io import read_image, read_label
    from zodi_core.transfer.preview import make_preview

    config = tiny_transfer_config(
        tiny_models_dir, domain_settings={"dusk": {"prompt": "dusk", "strength": 0.9}}
    ).replace(domain="dusk")
    row = read_manifest(samples_manifest, "samples").to_pylist()[0]
    image, label = read_image(row["image_uri"]), read_label(row["label_uri"], row["label_format"])
    sampler = TransferSampler(tiny_components, config)
    used = []

    def recording(images, labels, ids, cfg):
        outs = sampler(images, labels, ids, cfg)
        used.append((outs[0].metadata["strength"], outs[0].metadata["prompt"]))
        return outs

    make_preview(recording, image, label, [0.5, 1.0], config, row["sample_id"])
    assert used == [(0.5, "dusk"), (1.0, "dusk")]
