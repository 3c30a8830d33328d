#!/usr/bin/env bash
# Sets a fresh Debian 12 machine up for speechain-mpi (apt packages when missing), builds the release binary and,
# unless --no-run is given, runs the default job: the spoken-digits recipe built, trained and tested (about 8 minutes
# on 2 cores). The built-in MLP experiment stays available as `speechain-mpi` alone.
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
[ "${1:-}" = "--no-run" ] && exit 0

# The default job: the spoken-digits recipe (SpeeChain's ar_asr.ARASR) built, trained over MPI, tested with beam
# search, ending with its WER. Ranks: SPEECHAIN_NP (default 2). Results: recipes/asr/spoken_digits/exp/transformer/.
data=recipes/asr/spoken_digits/data
if [ ! -f "$data/corpus_meta.txt" ] || [ -d "$data/.work" ]; then
    recipes/asr/spoken_digits/data_prep.sh
fi
np="${SPEECHAIN_NP:-2}"
[ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
config=recipes/asr/spoken_digits/exp_cfg/transformer.yaml
resume=()
# a second run continues the first (a finished training is kept; the test stage picks up where it stopped)
[ -f recipes/asr/spoken_digits/exp/transformer/checkpoint.safetensors ] && resume=(--resume)
echo "setup: mpirun -np $np $bin --config $config ${resume[*]}"
mpirun -np "$np" --oversubscribe --bind-to none "$bin" --config "$config" "${resume[@]}"
