#!/usr/bin/env bash
# Installs the Debian packages Cohort needs (only those missing) and builds it.
# Usage: launch/setup.sh [debug|release]      (default: release)
# Safe to run again: installed packages are skipped and the build is incremental.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
configuration="${1:-release}"

packages=(libopenmpi-dev openmpi-bin libopenblas-dev libhdf5-dev hdf5-tools pkg-config zlib1g-dev dataset-fashion-mnist bible-kjv iproute2)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null; then
    echo "setup: no Swift toolchain on PATH; install Swift 6 from swift.org (see README, Requirements)" >&2
    exit 1
fi
echo "setup: building ($configuration)"
swift build --package-path "$root" -c "$configuration" 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
test -x "$root/.build/$configuration/cohort" || { echo "setup: build failed" >&2; exit 1; }
