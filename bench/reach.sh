#!/usr/bin/env bash
# Reachability benchmark. A generated cluster of 10,000 pods and 1,000 NetworkPolicies in 50
# namespaces, in two shapes: 2,000 Deployments x 5 replicas (workloads grouped by owner, the normal
# case) and 10,000 single-replica Deployments (the worst case: 10^8 pairs). For each: load, engine
# build and full matrix with Sigil's engine, and the reference evaluator (the simple
# per-connection peer, same code the property tests use) on a sample of source rows, extrapolated
# to the full matrix, for the ratio; both must agree on every sampled (pair, port). Memory: maximum
# resident set size (GNU time). Ends with RESULT lines.
# Usage: bench/reach.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cargo build -q --release -p sigil-reach --example gen_cluster --example reach_bench
run() { # name replicas sample-rows
  ./target/release/examples/gen_cluster 10000 "$2" 1000 50 > "$OUT/$1.yaml"
  /usr/bin/time -v ./target/release/examples/reach_bench "$OUT/$1.yaml" "$3" > "$OUT/$1.txt" 2> "$OUT/$1.time"
  grep -v '^RESULT' "$OUT/$1.txt" | sed "s/^/$1: /" >&2
  sed -n "s/^RESULT reach_\([a-z_]*\) /RESULT reach_$1_\1 /p" "$OUT/$1.txt"
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$OUT/$1.time")
  echo "RESULT reach_$1_max_rss_mib $(awk "BEGIN {printf \"%.1f\", $rss_kb/1024}") MiB"
}
run owners 5 20
run single 1 2
