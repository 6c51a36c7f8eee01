"""regenerate_flow under the session's Prefect test harness: comparison only when nothing
changed, prompt config from a Prefect Variable, a failed domain named in the state."""

from __future__ import annotations

import pytest
from test_prompts import write_paired

from zodi_core.config import DatasetSpec, TransferConfig

pytestmark = pytest.mark.slow

# No model exists here: any attempt to transfer fails, so a test sees whether one was made.
NO_MODELS = {"base": "/nonexistent/zodi-models", "controlnet": None}


@pytest.fixture
def samples_uri(synthetic_root, tmp_path) -> str:
    from zodi_core.datasets.ingest import ingest_dataset

    spec = DatasetSpec(
        dataset="cityscapes", root=str(synthetic_root / "cityscapes"), split="train", subset=2
    )
    return ingest_dataset(spec, str(tmp_path / "samples.parquet"), progress=False).manifest_uri


def test_regenerate_flow_unchanged_domains_cost_only_the_comparison(
    prefect_harness, samples_uri, tmp_path
):
    from flows.regenerate import regenerate_flow

    root = tmp_path / "out"
    write_paired(root, "night", "driving at night, best quality", 0.9)
    write_paired(root, "fog", "driving in dense fog", 0.5)
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(
        "version: 4\ndomains:\n  night: {}\n  fog: {prompt: driving in dense fog, strength: 0.5}\n"
    )

    report = regenerate_flow(str(prompts), samples_uri, str(root), TransferConfig(models=NO_MODELS))
    assert report["changed"] == [] and sorted(report["unchanged"]) == ["fog", "night"]
    assert report["regenerated"] == {} and report["transfer"] == {} and report["failed"] == {}
    assert [s["status"] for s in report["statuses"]] == ["unchanged", "unchanged"]


@pytest.mark.parametrize("as_json", [False, True])
def test_regenerate_flow_reads_a_prefect_variable_and_names_a_failed_domain(
    prefect_harness, samples_uri, tmp_path, as_json
):
    from prefect.variables import Variable

    from flows.regenerate import regenerate_flow

    root = tmp_path / "out"
    write_paired(root, "night", "driving at night, best quality", 0.9)
    write_paired(root, "fog", "driving in fog, best quality", 0.6)
    value = (
        {"version": "9", "domains": {"night": {}, "fog": {"prompt": "driving in thick fog"}}}
        if as_json
        else "version: 9\ndomains:\n  night: {}\n  fog: {prompt: driving in thick fog}\n"
    )
    name = f"zodi-prompts-{'json' if as_json else 'yaml'}"
    Variable.set(name, value, overwrite=True)

    state = regenerate_flow(
        f"variable://{name}",
        samples_uri,
        str(root),
        TransferConfig(models=NO_MODELS),
        return_state=True,
    )
    # fog changed, so it was regenerated — and with no models that transfer fails, by name.
    assert state.is_failed() and "fog" in state.message
    report = state.result(raise_on_failure=False)
    assert (
        report["version"] == "9"
        and report["changed"] == ["fog"]
        and report["unchanged"] == ["night"]
    )
    assert list(report["failed"]) == ["fog"] and report["regenerated"] == {}
    assert report["transfer"]["fog"]["shards_failed"]


def test_regenerate_flow_missing_variable_is_a_clear_error(prefect_harness, samples_uri, tmp_path):
    from flows.regenerate import regenerate_flow

    state = regenerate_flow(
        "variable://zodi-no-such-variable",
        samples_uri,
        str(tmp_path),
        TransferConfig(),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(ValueError, match="no Prefect Variable named 'zodi-no-such-variable'"):
        state.result()


def test_regenerate_flow_retrains_only_regenerated_domains(prefect_harness, tmp_path, monkeypatch):
    """With retrain, train_flow gets exactly the regenerated domains' paired manifests."""
    import flows.regenerate as regenerate

    calls = {}

    def fake_transfer(samples_uri, domains, out_root, config, shard_size, return_state):
        from prefect.states import Completed

        (domain,) = domains
        calls.setdefault("transfer", []).append((domain, config.effective_prompt))
        result = {
            "domains": {domain: {"images_written": 1}},
            "paired": {domain: f"{out_root}/{domain}.parquet"},
        }
        return Completed(data=result)

    def fake_train(source_uri, paired, root, train):
        calls["train"] = paired
        return {"zodi-fog": []}

    def fake_evaluate(checkpoints, targets, proxies, root, train, evaluation):
        calls["evaluate"] = (checkpoints, targets)
        return {"zodi-fog": {"targets": {}}}

    monkeypatch.setattr(regenerate, "transfer_flow", fake_transfer)
    monkeypatch.setattr(regenerate, "train_flow", fake_train)
    monkeypatch.setattr(regenerate, "evaluate_flow", fake_evaluate)
    root = tmp_path / "out"
    write_paired(root, "night", "driving at night, best quality", 0.9)
    prompts = tmp_path / "p.yaml"
    prompts.write_text("domains:\n  night: {}\n  fog: {prompt: driving in fog}\n")

    report = regenerate.regenerate_flow(
        str(prompts), "samples.parquet", str(root), TransferConfig(), retrain=True,
        targets={"acdc-fog-val": "fog.parquet"},
    )  # fmt: skip
    assert calls["transfer"] == [("fog", "driving in fog")]
    assert calls["train"] == {"fog": f"{root}/fog.parquet"}
    assert calls["evaluate"] == ({"zodi-fog": []}, {"acdc-fog-val": "fog.parquet"})
    assert report["evaluation"] == {"zodi-fog": {"targets": {}}}


def test_regenerate_flow_surfaces_the_real_error_of_a_failed_transfer(prefect_harness, tmp_path):
    """A transfer subflow that raises (here: its samples manifest is gone) fails the run with
    that error's own message — never a TypeError from indexing the failed state's data."""
    from flows.regenerate import regenerate_flow

    root = tmp_path / "out"
    write_paired(root, "fog", "driving in fog, best quality", 0.6)
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("domains:\n  fog: {prompt: driving in thick fog}\n")
    missing = tmp_path / "gone" / "samples.parquet"

    state = regenerate_flow(
        str(prompts), str(missing), str(root), TransferConfig(models=NO_MODELS), return_state=True
    )
    assert state.is_failed()
    assert "TypeError" not in state.message and "not subscriptable" not in state.message
    assert "regeneration failed for fog:" in state.message and str(missing) in state.message
    report = state.result(raise_on_failure=False)
    assert list(report["failed"]) == ["fog"] and str(missing) in report["failed"]["fog"]
    assert report["regenerated"] == {} and report["transfer"] == {}
    (fog,) = report["statuses"]
    assert fog["old"][0]["prompt"] == "driving in fog, best quality"
    assert fog["new"]["prompt"] == "driving in thick fog"


def test_regenerate_flow_right_after_deploy_does_nothing_and_completes(prefect_harness, tmp_path):
    """Nothing generated under the root and no samples manifest: a Completed run saying so."""
    from flows.regenerate import regenerate_flow

    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("domains:\n  night: {}\n")
    samples = tmp_path / "root" / "manifests" / "cityscapes-train.parquet"
    state = regenerate_flow(
        str(prompts), str(samples), str(tmp_path / "root"), TransferConfig(models=NO_MODELS),
        return_state=True,
    )  # fmt: skip
    assert state.is_completed(), state.message
    report = state.result()
    assert report["regenerated"] == {} and report["failed"] == {} and report["statuses"] == []
    assert "nothing generated under" in report["note"] and str(samples) in report["note"]
