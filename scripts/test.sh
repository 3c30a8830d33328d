#!/usr/bin/env bash
# Runs the whole test suite (unit tests, reference trajectories, and the integration tests that launch the built
# executable). Assumes scripts/setup.sh has been run once on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build-flags.sh
# mpirun refuses root without these (CI runs as root); harmless for other users.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# glibc fills freed (and fresh) heap memory with a pattern: a layer reading a buffer already freed reads garbage or
# crashes every time instead of passing by luck (it found layers holding their parameter store unowned).
export MALLOC_PERTURB_="${MALLOC_PERTURB_:-165}"
# TensorBoardTests read the event files back with the tensorboard package itself.
python3 -c 'import tensorboard' 2>/dev/null || python3 -m pip install --quiet 'tensorboard'
swift test "${SWIFT_RELEASE_FLAGS[@]}" "$@"
