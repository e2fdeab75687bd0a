#!/usr/bin/env bash
# Prepares .device/ for a run on the GPU machine (see ../shared/device/README.md): copies the
# shared recipe and adds the Debian packages kdseg needs beyond it (spdlog, fmt, nlohmann-json, libdeflate),
# which that machine's image lacks. build.sh unpacks every .deb in .device/debs into /opt/deb.
# Then call the device tool with carry [".device"] and, for example:
#   bash .device/build.sh && . build-gpu/env.sh && ctest --test-dir build-gpu -L gpu --output-on-failure
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_DEVICE_DIR:-../shared/device}
mkdir -p .device/debs
cp -r "$shared"/* .device/
grep -qxF '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
cd .device/debs
apt-get download libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 nlohmann-json3-dev libdeflate-dev libdeflate0
ls -1 "$PWD"
