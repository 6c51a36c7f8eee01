#!/usr/bin/env bash
# Download the wheels the transfer path and the GPU check need beyond torch, for a GPU worker
# with Python 3.12 and a CUDA torch but no package index (scripts/gpu_check.sh installs them
# there with pip --no-index). Run where pip reaches an index.
#
#   scripts/gpu_wheels.sh [DIR]      # default DIR: .whl/gpu (ignored by git)
#
# Versions are the ones the test suite passes with (constraints.txt). Environment:
#   PYTHON_VERSION (3.12)  the worker's Python
#   PYTHON                 the Python whose pip downloads (default: .venv/bin/python, python3)
#   WITH_PYTEST (1)        also pytest and its needs (the check runs the gpu tests)
#   WITH_NUMPY_PILLOW (0)  also numpy and pillow (24 MB) for a worker image without them
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$REPO/.whl/gpu}"
PYVER="${PYTHON_VERSION:-3.12}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

# What the transfer path imports beyond torch (zodi_core.transfer.sampler and models,
# zodi_core.conditions, the config, bench/transfer.py), measured as the modules loaded by a bench
# run, with the needs they check at import; torch's own (filelock, fsspec, jinja2, networkx,
# sympy) come with any torch install. Not here: the CLIs' typer/click/rich, hf-xet (downloads
# only), pyarrow (manifests: the runner, not the check), 42 MB).
PACKAGES=(
  diffusers transformers tokenizers safetensors huggingface_hub httpx2 httpcore2 truststore h11 anyio
  sniffio certifi idna requests urllib3 charset-normalizer regex tqdm packaging PyYAML
  pydantic pydantic_core annotated-types typing-inspection typing_extensions
)
# numpy and pillow (24 MB together) are in every CUDA torch image we know of (pytorch/pytorch,
# NGC, torchvision's needs); WITH_NUMPY_PILLOW=1 adds them for one that lacks them.
if [[ "${WITH_NUMPY_PILLOW:-0}" == 1 ]]; then PACKAGES+=(numpy pillow); fi
if [[ "${WITH_PYTEST:-1}" == 1 ]]; then PACKAGES+=(pytest pluggy iniconfig pygments pytest-timeout); fi

pins=()
for name in "${PACKAGES[@]}"; do
  # constraints.txt spells names either way (- or _) and in any case
  pattern="^$(echo "$name" | sed 's/[-_]/[-_]/g')=="
  pin="$(grep -i -E "$pattern" "$REPO/constraints.txt" | head -1 || true)"
  if [[ -z "$pin" ]]; then
    echo "gpu_wheels.sh: warning: $name is not pinned in constraints.txt; downloading the latest" >&2
    pin="$name"
  fi
  pins+=("$pin")
done

mkdir -p "$DIR"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
  manylinux1_x86_64 manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 \
  manylinux_2_35_x86_64; do
  platforms+=(--platform "$p")
done
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp "${platforms[@]}" -d "$DIR" "${pins[@]}" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

total=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
printf 'gpu_wheels.sh: %d wheels, %.1f MB in %s (Python %s, linux x86_64)\n' \
  "$(ls "$DIR"/*.whl | wc -l)" "$(echo "$total / 1000000" | bc -l)" "$DIR" "$PYVER"
