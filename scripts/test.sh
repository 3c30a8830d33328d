#!/usr/bin/env bash
# Runs the whole test suite (unit tests, reference trajectories, and the integration tests that launch the built
# executable). Assumes scripts/setup.sh has been run once on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build-flags.sh
# mpirun refuses root without these (CI runs as root); harmless for other users.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# TensorBoardTests read the event files back with the tensorboard package itself.
python3 -c 'import tensorboard' 2>/dev/null || python3 -m pip install --quiet 'tensorboard'
swift test "${SWIFT_RELEASE_FLAGS[@]}" "$@"
