#!/usr/bin/env bash
# Create .venv and install the pinned stack, in the order that works:
#   1. torch first (TORCH_SPEC, default the CPU build torch==2.13.0; on a GPU machine set
#      TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 to take a CUDA build),
#   2. build tools for mmcv (setuptools<81, ninja, wheel),
#   3. mmcv 2.1.0 built from source WITH ops (--no-build-isolation, so it compiles against the
#      torch above; ~12 min on 2 cores the first time, then pip's wheel cache reuses it),
#   4. everything else under constraints.txt, so nothing replaces torch,
#   5. the project in editable mode.
# A stamp file records a digest of the inputs: a second run with unchanged inputs is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
MMCV_SPEC=${MMCV_SPEC:-mmcv==2.1.0}

digest=$(cat constraints.txt requirements.in pyproject.toml scripts/install.sh \
  | { echo "$TORCH_SPEC $TORCH_INDEX_URL $MMCV_SPEC"; cat; } | sha256sum | cut -c1-16)
stamp="$VENV/.zodi-installed-$digest"
if [ -f "$stamp" ]; then
  exit 0
fi

command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off)

echo "[install] 1/5 $TORCH_SPEC"
if [ -n "$TORCH_INDEX_URL" ]; then
  "${pip[@]}" --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
else
  "${pip[@]}" "$TORCH_SPEC"
fi
# Constrain every later step to the torch that is now installed.
torch_pin="torch==$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
cons=$(mktemp)
trap 'rm -f "$cons"' EXIT
grep -v '^torch==' constraints.txt > "$cons"
echo "$torch_pin" >> "$cons"

echo "[install] 2/5 build tools"
"${pip[@]}" -c "$cons" "setuptools<81" ninja wheel

echo "[install] 3/5 $MMCV_SPEC with ops (first build takes ~12 min on 2 cores; cached afterwards)"
if ! "$VENV/bin/python" -c 'import mmcv, mmcv.ops' 2>/dev/null; then
  # mmcv's own requirements first, so that the source build only compiles.
  "${pip[@]}" -c "$cons" addict mmengine numpy packaging pillow pyyaml yapf opencv-python
  MAX_JOBS=${MAX_JOBS:-$(nproc)} MMCV_WITH_OPS=1 "${pip[@]}" -c "$cons" --no-build-isolation "$MMCV_SPEC"
fi

echo "[install] 4/5 pinned stack"
"${pip[@]}" -c "$cons" -r requirements.in

echo "[install] 5/5 zodi (editable)"
"${pip[@]}" -c "$cons" --no-deps --no-build-isolation -e .

"$VENV/bin/python" -c 'import torch, mmcv.ops, mmseg, mmengine, diffusers, transformers, prefect, pyarrow, boto3; print("[install] ok: torch", torch.__version__, "mmcv", mmcv.__version__)'
rm -f "$VENV"/.zodi-installed-*
touch "$stamp"
