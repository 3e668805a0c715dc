#!/usr/bin/env bash
# Installs the CUDA compiler and runtime (headers + static runtime) of one CUDA version, and
# nothing else, for building ioattn wheels: cibuildwheel's before-all (manylinux_2_28 images)
# and noxfile.py's `wheel` session. Prints the CMake settings the build needs.
#
#   ci/install_cuda.sh 13.0 [prefix]   nvcc from NVIDIA's RHEL 8 repository (dnf), or the
#                                      system toolkit when one of that version is installed
#   ci/install_cuda.sh 12.9 [prefix]   NVRTC + nvFatbin + runtime + crt headers from PyPI into
#                                      <prefix> (default /opt/ioattn-cuda-12.9); the PyPI
#                                      nvidia-cuda-nvcc-cu12 has no nvcc, NVRTC compiles instead
#
# The PyPI route needs only pip, so it works on any image and architecture; its pins match the
# CUDA 12.9 update-1 toolkit.
set -euo pipefail
version=${1:?usage: ci/install_cuda.sh <12.9|13.0> [prefix]}
prefix=${2:-/opt/ioattn-cuda-$version}
arch=$(uname -m)
python=${PYTHON:-$(command -v python3 || command -v python)}

case "$version" in
  12.9)
    # --target keeps these out of any environment; cmake/cuda_toolchain.cmake reads the layout.
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$prefix" \
      nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-nvfatbin-cu12==12.9.82 \
      nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86 >&2
    echo "IOATTN_DEVICE_COMPILER=nvrtc"
    echo "IOATTN_CUDA_PIP_ROOT=$prefix"
    ;;
  13.0)
    nvcc=""
    for candidate in "$(command -v nvcc || true)" /usr/local/cuda-13.0/bin/nvcc; do
      if [ -x "$candidate" ] && "$candidate" --version | grep -q "release 13.0"; then
        nvcc=$candidate
        break
      fi
    done
    if [ -z "$nvcc" ]; then
      command -v dnf >/dev/null || { echo "no nvcc 13.0 and no dnf to install it" >&2; exit 1; }
      repo_arch=$([ "$arch" = aarch64 ] && echo sbsa || echo x86_64)
      dnf config-manager --add-repo \
        "https://developer.download.nvidia.com/compute/cuda/repos/rhel8/$repo_arch/cuda-rhel8.repo" >&2
      dnf install -y -q cuda-nvcc-13-0 cuda-cudart-devel-13-0 cuda-crt-13-0 >&2
      nvcc=/usr/local/cuda-13.0/bin/nvcc
    fi
    echo "IOATTN_DEVICE_COMPILER=nvcc"
    echo "CUDACXX=$nvcc"
    ;;
  *)
    echo "ci/install_cuda.sh: CUDA $version is not a wheel target (12.9 or 13.0)" >&2
    exit 2
    ;;
esac
