#!/usr/bin/env bash
# Installs the Debian 12 packages that kdseg's build, tests and demo need.
# Idempotent: apt-get update and install run only when a package is missing.
set -euo pipefail

packages=(
  build-essential cmake git pkg-config
  libtorch-dev
  libopenmpi-dev openmpi-bin
  libhdf5-dev
  libboost-program-options-dev
  libniftiio-dev libnifti2-dev libznz-dev zlib1g-dev libpng-dev libdeflate-dev
  libgtest-dev libbenchmark-dev
  nlohmann-json3-dev libspdlog-dev libfmt-dev
  chromium python3-h5py python3-nibabel python3-torch python3-onnx
  clang-format
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
