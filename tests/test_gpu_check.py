"""The prepared GPU check, rehearsed on CPU: scripts/gpu_check.sh OUT --device cpu --quick installs
wheels with pip --no-index into a temporary folder, runs the gpu tests (skipped here) and the
bench matrix on the tiny models, and writes gpu_check.json and gpu_check.md; and bench/transfer.py's
flags (--faithful-images 0, --out, the FLOP count under the math attention backend)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_transfer", REPO / "bench" / "transfer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _probe_wheel(folder: Path) -> Path:
    """A one-module pure-Python wheel, so the check's pip --no-index install runs for real."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "zodi_gpu_probe-0.1-py3-none-any.whl"
    info = "zodi_gpu_probe-0.1.dist-info"
    files = {
        "zodi_gpu_probe/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: zodi-gpu-probe\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", record)
    return wheel


@pytest.mark.slow
def test_gpu_check_rehearsal_on_cpu_writes_json_and_markdown(tmp_path):
    wheels = tmp_path / "wheels"
    _probe_wheel(wheels)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out), "--device", "cpu", "--quick",
         "--wheels", str(wheels)],
        capture_output=True, text=True, env=env, timeout=540,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "installing 1 wheels" in proc.stdout
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["ok"] is True
    # the gpu tests were collected and skipped (no CUDA here), none failed
    assert result["tests"]["exit_code"] == 0 and result["tests"].get("skipped", 0) >= 2
    assert "failed" not in result["tests"]
    bench_result = result["bench"]
    assert bench_result["machine"]["device"] == "cpu"
    assert bench_result["faithful"]["s_per_image"] > 0
    runs = {r["name"]: r for r in bench_result["runs"]}
    assert {"float32 b2", "bfloat16 b2", "float32 b2 channels_last", "float32 b2 compile"} <= set(
        runs
    )
    for run in runs.values():
        assert run["status"] == "ok", run
        assert run["s_per_image"] > 0 and run["speedup_vs_faithful"] > 0
    assert runs["float32 b2 compile"]["compile"] is True
    assert runs["float32 b2 channels_last"]["channels_last"] is True
    # float32 is the faithful loop's computation: the same images up to rounding
    assert runs["float32 b2"]["mean_abs_diff_vs_faithful"] < 0.5
    md = (out / "gpu_check.md").read_text()
    assert "| run | dtype | channels_last | compile |" in md
    assert "| faithful loop | float32 |" in md and "| float32 b2 compile |" in md
    assert sorted(p.name for p in out.iterdir()) == [
        "bench.log", "gpu_check.json", "gpu_check.md", "pytest.log"
    ]  # fmt: skip


def test_gpu_check_names_a_missing_output_folder_argument():
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--quick"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "gpu_check.sh OUT" in proc.stderr


@pytest.mark.slow
def test_bench_faithful_images_zero_skips_the_faithful_loop_and_writes_json(tmp_path):
    out = tmp_path / "r.json"
    summary = bench.main(
        ["--arch", "tiny", "--size", "128x64", "--images", "2", "--faithful-images", "0",
         "--batch-size", "2", "--steps", "2", "--strength", "1.0", "--rounds", "1",
         "--channels-last", "--sdpa-backend", "math", "--no-tf32", "--out", str(out)]
    )  # fmt: skip
    written = json.loads(out.read_text())
    assert written["faithful"] is None and summary["faithful"] is None
    (run,) = written["runs"]
    assert run["status"] == "ok" and run["images"] == 2 and run["batch_size"] == 2
    assert (run["channels_last"], run["sdpa_backend"], run["tf32"]) == (True, "math", False)
    assert "speedup_vs_faithful" not in run


@pytest.mark.slow
def test_bench_runs_picks_matrix_runs_and_profile_splits_the_time_by_model(tmp_path):
    """--runs finishes a matrix that a budget cut (only the runs named, in matrix order);
    --profile times one batch under torch.profiler and splits it by model."""
    quick = ["--matrix", "--quick", "--device", "cpu", "--faithful-images", "0"]
    with pytest.raises(SystemExit, match="no run named 'float16 b8'.*the runs here: float32 b2"):
        bench.main([*quick, "--runs", "float16 b8"])
    profile = tmp_path / "profile.md"
    summary = bench.main([*quick, "--runs", "float32 b1", "--profile", str(profile)])
    assert [r["name"] for r in summary["runs"]] == ["float32 b1"]
    shares = summary["profile_shares_pct"]
    assert set(shares) == {"vae encode", "vae decode", "controlnet", "unet"}
    assert shares["unet"] > 0 and shares["controlnet"] > 0 and sum(shares.values()) <= 100.5
    text = profile.read_text()
    assert "| unet |" in text and "| rest (scheduler, CFG, conversions, Python) |" in text


def test_bench_refuses_a_negative_faithful_image_count():
    with pytest.raises(SystemExit):
        bench.main(["--arch", "tiny", "--faithful-images", "-1"])


def test_flop_count_includes_attention_under_the_math_backend():
    """FlopCounterMode does not count every fused attention kernel; under the math backend the
    attention's matmuls are counted. The tiny UNet at 64x128 (latent 8x16) has attention."""
    from torch.utils.flop_counter import FlopCounterMode

    from zodi_core.transfer.models import build_tiny_components

    unet = build_tiny_components().unet
    x, t, emb = torch.zeros(1, 4, 8, 16), torch.tensor(1), torch.zeros(1, 77, 32)

    def count(backend: str) -> int:
        with bench.speed_levers(torch.device("cpu"), sdpa_backend=backend), torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                unet(x, t, encoder_hidden_states=emb)
        return counter.get_total_flops()

    # attention: 2 layers x (QK^T and AV: 2 x 2*L*L*C), L = 128 tokens, C = 32 channels; plus
    # cross-attention over 77 text tokens
    self_attention = 2 * 2 * (2 * 128 * 128 * 32)
    assert count("math") - count("flash") >= self_attention
    flops = bench.count_flops("tiny", bench.TransferConfig.preset("demo", strength=1.0), 128, 64)
    assert flops["evaluations"] == 1 + 2 * 4
    assert flops["per_image"] >= flops["evaluations"] * flops["per_evaluation"] + flops["vae"]


@pytest.mark.slow
def test_flop_count_of_sd15_at_512x1024_is_about_100_tflop():
    """SD 1.5 + ControlNet's real architecture on meta tensors (no weights): 37 evaluations at
    T=20, S=0.9 plus the VAE, as issue 21 estimates (≈ 2.5 TFLOP an evaluation, ≈ 100 a image)."""
    cfg = bench.TransferConfig.preset("default", strength=0.9)
    flops = bench.count_flops("sd15", cfg, 1024, 512)
    assert flops["evaluations"] == 37
    assert 2.0e12 < flops["per_evaluation"] < 3.0e12
    assert 80e12 < flops["per_image"] < 120e12
