#!/usr/bin/env bash
# SVID issuance throughput, including the durable store write and audit record, side by side with
# OpenSSL's raw ECDSA P-256 signing rate on one core (the cryptographic ceiling of one signature
# per SVID). Usage: bench/issue.sh [N] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
C=${2:-64}
cargo build --release -q -p sigil-ca --example issue_bench
out=$(target/release/examples/issue_bench "$N" "$C")
echo "$out"
lib=$(echo "$out" | awk '/^RESULT svid_issue_rate /{print $3}')
# openssl speed prints "... sign/s verify/s" for ecdsap256; take sign/s (single process, one core).
ossl=$(openssl speed -seconds 3 ecdsap256 2>/dev/null | awk '/256 bits ecdsa \(nistp256\)/{print $(NF-1)}' | tail -1)
echo "openssl ecdsa p256 sign/s (1 core): $ossl"
echo "$out" | grep '^RESULT'
echo "RESULT openssl_ecdsa_p256_sign_rate ${ossl%.*} sign/s"
awk -v a="$lib" -v b="$ossl" 'BEGIN{printf "RESULT svid_issue_vs_openssl_raw_sign %.2f x\n", a/b}'
