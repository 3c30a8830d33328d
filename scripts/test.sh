#!/usr/bin/env bash
# Runs the whole test suite (unit tests, reference trajectories, and the integration tests that launch the built
# executable). Assumes scripts/setup.sh has been run once on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
swift test "$@"
