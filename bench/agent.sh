#!/usr/bin/env bash
# Agent benchmark: 1,000 registered workloads pre-issued and all rotated at once, with 100 open
# Workload API streams that must each receive the new snapshot. Time and memory.
# Usage: bench/agent.sh [workloads] [streams]   (PROFILE=dev to skip the release build)
# Peer: SPIRE cannot run here (no network beyond crates.io/PyPI), so no ratio is printed;
# compare by hand with `spire-agent` on the same host if available.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
cargo build -q --profile "$PROFILE" -p sigil-agent --example rotation_bench
dir=release; [ "$PROFILE" = dev ] && dir=debug
"target/$dir/examples/rotation_bench" "${1:-1000}" "${2:-100}"
