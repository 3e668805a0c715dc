#!/usr/bin/env bash
# GPU test driver, run on the GPU machine from the repo root with the wheels of
# ci/device_wheels.txt carried in .whl/ (fetch them first with ci/fetch_device_wheels.sh).
# That machine is offline: nox is installed from .whl/ into a private folder (the system
# Python is left alone), then `nox -s gpu` builds the full kernel table with the machine's own
# torch, CMake, ninja and scikit-build-core, runs every test and `python -m ioattn`.
# Arguments go to pytest, e.g.  ci/gpu.sh -m gpu -x
# IOATTN_NOX_SESSION=bench ci/gpu.sh --quick   runs another session (here the benchmark, after a
# `ci/gpu.sh` has installed ioattn); the arguments then go to that session.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
site=${IOATTN_NOX_SITE:-/tmp/ioattn-nox-site}
if ! ls .whl/nox-*.whl >/dev/null 2>&1; then
  echo "ci/gpu.sh: no .whl/nox-*.whl; run ci/fetch_device_wheels.sh and carry .whl" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$site" .whl/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
exec python3 -m nox --non-interactive --no-venv -s "${IOATTN_NOX_SESSION:-gpu}" -- "$@"
