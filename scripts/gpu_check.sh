#!/usr/bin/env bash
# The prepared GPU check: on a GPU worker with Python and a CUDA torch but no package index,
# install the wheels of scripts/gpu_wheels.sh into a temporary folder, run the `gpu` tests and
# the transfer benchmark's matrix (bench/transfer.py --matrix: float16 vs bfloat16, channels_last,
# compile, batch 1/4/8/16, attention backends, against the faithful float32 loop), and write
#   OUT/gpu_check.json  everything measured (tests, machine, FLOPs, one entry per run)
#   OUT/gpu_check.md    the same as a markdown table
#   OUT/pytest.log, OUT/bench.log
# within 8 minutes on one H100/H200 (runs that would not fit are listed as skipped).
#
#   scripts/gpu_check.sh OUT [--device cpu] [--quick] [--wheels DIR] [--models DIR]
#                            [--budget-s SECONDS] [-k EXPR] [-- BENCH_ARGS...]
#
# --device cpu --quick is the rehearsal the test suite runs (tiny models, seconds to a minute).
# --models DIR: a local SD 1.5 + ControlNet folder (zodi models download); default: SD 1.5's
# architecture with random weights, built from configs (speed does not depend on the weights).
# -k EXPR: only the gpu tests pytest's -k selects. After --: more arguments for bench/transfer.py
# (e.g. -- --runs 'float16 b16,float16 b8 compile' --faithful-images 0, to finish a matrix).
# Exit status: 0 all ran (skipped runs included), 1 a gpu test or the bench failed, 2 bad usage.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 && "$1" != -* ]] || usage
OUT="$1"; shift
DEVICE=cuda; QUICK=(); WHEELS="$REPO/.whl/gpu"; MODELS=(); BUDGET=480; SELECT=(); EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=(--quick); shift ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --models) MODELS=(--models "$2"); shift 2 ;;
    --budget-s) BUDGET="$2"; shift 2 ;;
    -k) SELECT=(-k "$2"); shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "gpu_check.sh: error: unknown option $1" >&2; usage ;;
  esac
done
PYTHON="${PYTHON:-python3}"
START=$(date +%s)
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*"; }

# 1. wheels: every library from DIR (the versions the suite passes with: transformers checks its
#    needs' versions at import), except numpy, pillow and pytest with its plugins' needs, which
#    only where the worker lacks them (its own builds and plugins stay)
SITE=""
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  SITE="$(mktemp -d "${TMPDIR:-/tmp}/zodi-gpu-site.XXXXXX")"
  mapfile -t PICK < <("$PYTHON" - "$WHEELS" <<'PY'
import sys
from importlib import metadata
from pathlib import Path

KEEP = {"numpy", "pillow", "pytest", "pluggy", "iniconfig", "pygments", "pytest_timeout"}
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    name = wheel.name.split("-")[0].lower().replace("-", "_")
    try:
        metadata.version(name)
        present = True
    except metadata.PackageNotFoundError:
        present = False
    if name not in KEEP or not present:
        print(wheel)
PY
)
  say "installing ${#PICK[@]} wheels from $WHEELS into $SITE"
  if ((${#PICK[@]})) && ! "$PYTHON" -m pip install -q --disable-pip-version-check --no-index \
      --no-deps --no-compile --no-cache-dir --find-links "$WHEELS" --target "$SITE" "${PICK[@]}"; then
    echo "gpu_check.sh: error: pip could not install the wheels in $WHEELS; rerun scripts/gpu_wheels.sh $WHEELS for this Python" >&2
    exit 1
  fi
else
  say "no wheels in $WHEELS: using the installed packages (scripts/gpu_wheels.sh makes them)"
fi
export PYTHONPATH="${SITE:+$SITE:}$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import torch, diffusers, transformers, pydantic, numpy, PIL, yaml" 2>"$OUT/import.err"; then
  echo "gpu_check.sh: error: $(tail -1 "$OUT/import.err"); run scripts/gpu_wheels.sh where pip works and pass --wheels DIR" >&2
  exit 1
fi
rm -f "$OUT/import.err"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

# 2. the gpu tests (skipped, and said so, on a machine without CUDA)
say "gpu tests"
(cd "$REPO" && timeout 240 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider -o addopts="" \
  "${SELECT[@]}" tests/test_sampler.py tests/test_speed_levers.py tests/test_pocket.py) > "$OUT/pytest.log" 2>&1
TESTS_RC=$?
tail -3 "$OUT/pytest.log"

# 3. the bench matrix, within what is left of the budget
LEFT=$(( BUDGET - ($(date +%s) - START) ))
say "bench matrix on $DEVICE, ${LEFT}s left"
(cd "$REPO" && timeout $((LEFT > 60 ? LEFT + 30 : 90)) "$PYTHON" bench/transfer.py --matrix --device "$DEVICE" "${QUICK[@]}" \
  "${MODELS[@]}" --budget-s "$LEFT" --out "$OUT/bench.json" --markdown "$OUT/bench.md" "${EXTRA[@]}") \
  2>&1 | tee "$OUT/bench.log"
BENCH_RC=${PIPESTATUS[0]}

# 4. one JSON and one markdown file
"$PYTHON" - "$OUT" "$TESTS_RC" "$BENCH_RC" "$START" <<'PY'
import json
import re
import sys
import time
from pathlib import Path

out, tests_rc, bench_rc, start = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
log = (out / "pytest.log").read_text()
counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", log)}
bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else None
result = {
    # 124: the bench reached the time limit; what it measured until then is in "bench"
    "ok": tests_rc in (0, 5) and bench_rc in (0, 124),
    "tests": {"exit_code": tests_rc, **counts},
    "bench_exit_code": bench_rc,
    "bench_timed_out": bench_rc == 124,
    "bench": bench,
    "elapsed_s": time.time() - start,
}
(out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
table = (out / "bench.md").read_text() if (out / "bench.md").is_file() else "(no bench results)\n"
line = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no result"
(out / "gpu_check.md").write_text(
    f"# GPU check\n\ngpu tests: {line} (exit {tests_rc}); bench exit {bench_rc}; "
    f"{result['elapsed_s']:.0f} s in all.\n\n{table}"
)
for name in ("bench.json", "bench.md"):
    (out / name).unlink(missing_ok=True)
print(f"gpu_check: {'ok' if result['ok'] else 'FAILED'}: {out}/gpu_check.json, {out}/gpu_check.md")
sys.exit(0 if result["ok"] else 1)
PY
