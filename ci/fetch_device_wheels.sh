#!/usr/bin/env bash
# Download the wheels in ci/device_wheels.txt into .whl/ (git-ignored), for carrying to the
# offline GPU machine. Run on a machine with PyPI access, from anywhere in the repo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dest=${1:-.whl}
mkdir -p "$dest"
python3 -m pip download --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi none --platform any \
  -d "$dest" -r ci/device_wheels.txt
echo "wheels in $dest:"
ls -1 "$dest"
