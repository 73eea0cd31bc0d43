#!/usr/bin/env bash
# Guardrails benchmark.
#  1. `sigil audit` vs checkov (PyPI) on the same generated workload manifests, in one run.
#  2. `sigil webhook` latency (p50/p99) under an open-loop load of AdmissionReview v1 requests
#     over TLS at a fixed rate (no in-cluster peer here: Gatekeeper/Kyverno need an API server).
# Prints one `RESULT <metric> <value> <unit>` line per figure at the end.
#
# Environment: N (manifests, default 10000), RATE (req/s, default 500), SECONDS_LOAD (default 20),
# CHECKOV (checkov executable, default `checkov` on PATH; `pip install checkov` into a venv).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-10000}
RATE=${RATE:-500}
SECONDS_LOAD=${SECONDS_LOAD:-20}
CHECKOV=${CHECKOV:-checkov}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

command -v "$CHECKOV" >/dev/null || { echo "checkov not found; pip install checkov (or set CHECKOV=)" >&2; exit 2; }

echo "building sigil (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p sigil && cargo build --release -q -p sigil-guard --example webhook_load)
SIGIL="$ROOT/target/release/sigil"
LOAD="$ROOT/target/release/examples/webhook_load"

python3 "$ROOT/bench/gen_manifests.py" "$WORK/manifests" "$N"
echo "generated $N manifests in $(ls "$WORK/manifests" | wc -l) files" >&2

now() { date +%s.%N; }

# sigil: three runs, report the median (it is fast enough that noise matters).
times=()
for i in 1 2 3; do
  t0=$(now)
  "$SIGIL" audit "$WORK/manifests" --output json --fail-on critical > "$WORK/sigil.json" || [ $? -eq 1 ]
  t1=$(now)
  times+=("$(echo "$t1 - $t0" | bc -l)")
done
SIGIL_S=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)

# checkov: one run on the same directory (kubernetes framework only, no network).
t0=$(now)
"$CHECKOV" -d "$WORK/manifests" --framework kubernetes --skip-download --quiet --compact -o json \
  > "$WORK/checkov.json" 2>"$WORK/checkov.err" || true
t1=$(now)
CHECKOV_S=$(echo "$t1 - $t0" | bc -l)

read -r SIGIL_OBJECTS SIGIL_FINDINGS < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["objects"], len(r["findings"]))' "$WORK/sigil.json")
read -r CK_RESOURCES CK_FAILED < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
r = r[0] if isinstance(r, list) else r
s = r["summary"]
print(s["resource_count"], s["failed"])' "$WORK/checkov.json")
echo "sigil: $SIGIL_OBJECTS objects, $SIGIL_FINDINGS findings in ${SIGIL_S}s; checkov: $CK_RESOURCES resources, $CK_FAILED failed checks in ${CHECKOV_S}s" >&2
if [ "$SIGIL_OBJECTS" -ne "$N" ]; then echo "sigil read $SIGIL_OBJECTS objects, expected $N" >&2; exit 1; fi

# Webhook: requests are the example platform's workloads (naive and hardened, allowed and denied).
"$LOAD" "$SIGIL" "$ROOT/examples/ai-platform/sigil.yaml" "$ROOT/examples/ai-platform/manifests" \
  "$RATE" "$SECONDS_LOAD" 8 > "$WORK/load.txt"

echo "RESULT audit_manifests $N count"
echo "RESULT audit_sigil_seconds $(printf '%.3f' "$SIGIL_S") s"
echo "RESULT audit_checkov_seconds $(printf '%.3f' "$CHECKOV_S") s"
echo "RESULT audit_speedup_vs_checkov $(printf '%.1f' "$(echo "$CHECKOV_S / $SIGIL_S" | bc -l)") x"
echo "RESULT audit_sigil_throughput $(printf '%.0f' "$(echo "$N / $SIGIL_S" | bc -l)") manifests/s"
cat "$WORK/load.txt"
