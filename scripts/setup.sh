#!/usr/bin/env bash
# Sets a fresh Debian 12 machine up for speechain-mpi (apt packages when missing), builds the release binary and,
# unless --no-run is given, trains the default experiment once.
set -euo pipefail
cd "$(dirname "$0")/.."

# MPI and BLAS; the speech path's audio I/O, resampling, FFT and tokenizer libraries; espeak-ng and sox for the
# spoken-digits corpus
packages=(libopenmpi-dev openmpi-bin libopenblas-dev pkg-config sentencepiece
          libsndfile1-dev libsoxr-dev libfftw3-dev libsentencepiece-dev espeak-ng sox)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: swift (6.x) is not on PATH; install the Swift toolchain first" >&2; exit 1; }

source scripts/build-flags.sh
swift build "${SWIFT_RELEASE_FLAGS[@]}" --product speechain-mpi
bin="$(swift build "${SWIFT_RELEASE_FLAGS[@]}" --show-bin-path)/speechain-mpi"
echo "setup: built $bin"
if [ "${1:-}" != "--no-run" ]; then
    "$bin"
fi
