#!/usr/bin/env bash
# Throughput, connection rate and added latency through an mTLS tunnel pair, side by side:
#   plaintext (no tunnel)  |  sigil outbound -> sigil inbound  |  stunnel4 client -> stunnel4 server
# Both tunnel pairs do equivalent mTLS on 127.0.0.1: TLS 1.3, AES-128-GCM, ECDSA P-256 SVIDs with
# SPIFFE URI SANs from one test CA, each side verifying the other's chain. Sigil also authorizes
# the client SPIFFE ID against a policy with the example platform's flow rag-api -> vector-db:6333.
#
# Needs: iperf3, stunnel4, openssl, python3 (apt-get install -y iperf3 stunnel4 openssl python3)
# and a release build (cargo build --release -p sigil; built here if missing).
#
# Env: DURATION (iperf3 seconds per run, default 8), RUNS (interleaved repetitions, default 3;
# the median is reported, and the median of each round's paired ratios as `*_paired`), PARALLEL (iperf3 streams, default 1), RATE_SECONDS (default 5),
# PINGS (round trips per path for latency, default 10000), RATE_RUNS (connection-rate rounds, default 3).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIGIL="${SIGIL:-$ROOT/target/release/sigil}"
DURATION="${DURATION:-8}"
RUNS="${RUNS:-3}"
PARALLEL="${PARALLEL:-1}"
RATE_SECONDS="${RATE_SECONDS:-5}"
PINGS="${PINGS:-10000}"

for tool in iperf3 stunnel4 openssl python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found; hint: apt-get install -y iperf3 stunnel4 openssl python3" >&2; exit 2; }
done
if [[ ! -x "$SIGIL" ]]; then
    echo "building $SIGIL (cargo build --release -p sigil)" >&2
    (cd "$ROOT" && cargo build --release -p sigil)
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Ports (127.0.0.1 only).
P_UP=15201      # iperf3 server (plaintext upstream)
P_ECHO=15202    # echo server (plaintext upstream for rate/latency)
P_SIG_IN=15301  P_SIG_OUT=15401  P_SIG_IN_E=15302 P_SIG_OUT_E=15402
P_ST_IN=15311   P_ST_OUT=15411   P_ST_IN_E=15312  P_ST_OUT_E=15412
P_SIG_IN_C=15303 P_SIG_OUT_C=15403   # sigil pair with --key-exchange classical (X25519), echo

# ---------- test PKI (openssl): CA + two SVIDs ----------
cd "$WORK"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj "/CN=bench CA ai.example.org" -days 1 -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
svid() { # name spiffe-id
    mkdir -p "$1"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1/svid.key" 2>/dev/null
    openssl req -new -key "$1/svid.key" -subj "/O=SPIFFE" -out "$1/csr.pem" 2>/dev/null
    cat >"$1/ext.cnf" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=URI:$2
EOF
    openssl x509 -req -in "$1/csr.pem" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
        -extfile "$1/ext.cnf" -out "$1/svid.pem" 2>/dev/null
    cp ca.pem "$1/bundle.pem"
    chmod 600 "$1/svid.key"
}
svid server spiffe://ai.example.org/ns/vectordb/sa/qdrant
svid client spiffe://ai.example.org/ns/rag/sa/rag-api

# The two workloads and the flow of examples/ai-platform/sigil.yaml that the tunnels carry.
POLICY="$WORK/sigil.yaml"
cat >"$POLICY" <<'EOF'
apiVersion: sigil.dev/v1alpha1
kind: Platform
trustDomain: ai.example.org
workloads:
  - name: rag-api
    kubernetes: { namespace: rag, serviceAccount: rag-api }
    ports: [{ port: 8080 }]
  - name: vector-db
    kubernetes: { namespace: vectordb, serviceAccount: qdrant }
    ports: [{ port: 6333 }, { port: 6334 }]
flows:
  - { from: rag-api, to: vector-db, ports: [6333] }
EOF

# ---------- upstreams ----------
iperf3 -s -B 127.0.0.1 -p "$P_UP" >/dev/null 2>&1 & PIDS+=($!)
cat >echo.py <<'EOF'
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
    except OSError: pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
python3 echo.py "$P_ECHO" & PIDS+=($!)

# ---------- sigil pair ----------
export SIGIL_LOG=warn
sig() { "$SIGIL" tunnel "$@" --policy "$POLICY" --port 6333 2>>sigil.log & PIDS+=($!); }
sig inbound --workload vector-db --listen 127.0.0.1:$P_SIG_IN --upstream 127.0.0.1:$P_UP --svid-dir server
sig outbound --to vector-db --listen 127.0.0.1:$P_SIG_OUT --remote 127.0.0.1:$P_SIG_IN --svid-dir client
sig inbound --workload vector-db --listen 127.0.0.1:$P_SIG_IN_E --upstream 127.0.0.1:$P_ECHO --svid-dir server
sig outbound --to vector-db --listen 127.0.0.1:$P_SIG_OUT_E --remote 127.0.0.1:$P_SIG_IN_E --svid-dir client
sig inbound --workload vector-db --listen 127.0.0.1:$P_SIG_IN_C --upstream 127.0.0.1:$P_ECHO --svid-dir server --key-exchange classical
sig outbound --to vector-db --listen 127.0.0.1:$P_SIG_OUT_C --remote 127.0.0.1:$P_SIG_IN_C --svid-dir client --key-exchange classical

# ---------- stunnel4 pair (equivalent mTLS) ----------
stunnel_conf() { # name mode accept connect dir
    cat >"$1.conf" <<EOF
foreground = yes
pid =
debug = 3
output = $WORK/$1.log
[t]
$2
accept = 127.0.0.1:$3
connect = 127.0.0.1:$4
cert = $WORK/$5/svid.pem
key = $WORK/$5/svid.key
CAfile = $WORK/ca.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
EOF
    stunnel4 "$WORK/$1.conf" >/dev/null 2>&1 & PIDS+=($!)
}
stunnel_conf st-server "" $P_ST_IN $P_UP server
stunnel_conf st-client "client = yes" $P_ST_OUT $P_ST_IN client
stunnel_conf st-server-e "" $P_ST_IN_E $P_ECHO server
stunnel_conf st-client-e "client = yes" $P_ST_OUT_E $P_ST_IN_E client

sleep 1.5
for p in $P_SIG_OUT $P_SIG_OUT_E $P_SIG_OUT_C $P_ST_OUT $P_ST_OUT_E $P_UP $P_ECHO; do
    python3 - "$p" <<'EOF' || { echo "error: nothing listening on $p; see logs in $WORK" >&2; cat "$WORK"/sigil.log >&2; exit 2; }
import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
EOF
done

# ---------- throughput (iperf3), interleaved runs, median ----------
iperf() { # port -> Gbit/s received
    iperf3 -c 127.0.0.1 -p "$1" -t "$DURATION" -P "$PARALLEL" -J 2>/dev/null | python3 -c \
        'import json,sys; d=json.load(sys.stdin); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))'
}
calc() { python3 -c "print('%.3f' % ($1))"; }
declare -a T_PLAIN T_SIGIL T_STUN R_SIG_PLAIN R_STUN_PLAIN R_SIG_STUN
for ((i = 0; i < RUNS; i++)); do
    T_PLAIN+=("$(iperf $P_UP)")
    T_SIGIL+=("$(iperf $P_SIG_OUT)")
    T_STUN+=("$(iperf $P_ST_OUT)")
    # Paired ratios: each round's tunnels against that round's plaintext, so that the machine's
    # drift between rounds (plaintext alone moves by 1.5x here) cancels out.
    R_SIG_PLAIN+=("$(calc "${T_SIGIL[-1]}/${T_PLAIN[-1]}")")
    R_STUN_PLAIN+=("$(calc "${T_STUN[-1]}/${T_PLAIN[-1]}")")
    R_SIG_STUN+=("$(calc "${T_SIGIL[-1]}/${T_STUN[-1]}")")
    echo "run $((i + 1))/$RUNS: plaintext ${T_PLAIN[-1]}  sigil ${T_SIGIL[-1]}  stunnel4 ${T_STUN[-1]} Gbit/s  sigil/plaintext ${R_SIG_PLAIN[-1]}  sigil/stunnel4 ${R_SIG_STUN[-1]}" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
PLAIN=$(median "${T_PLAIN[@]}"); SIG=$(median "${T_SIGIL[@]}"); STUN=$(median "${T_STUN[@]}")

# ---------- connection rate and added latency ----------
cat >load.py <<'EOF'
import socket, sys, threading, time
mode, port = sys.argv[1], int(sys.argv[2])
msg = b"x" * 64
def rt(s):
    s.sendall(msg); got = 0
    while got < len(msg):
        d = s.recv(65536)
        if not d: raise OSError("closed")
        got += len(d)
if mode == "rate":
    secs, workers, counts = float(sys.argv[3]), 8, []
    stop = time.monotonic() + secs
    def w():
        n = 0
        while time.monotonic() < stop:
            s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rt(s); s.close(); n += 1
        counts.append(n)
    ts = [threading.Thread(target=w) for _ in range(workers)]
    t0 = time.monotonic(); [t.start() for t in ts]; [t.join() for t in ts]
    print("%.0f" % (sum(counts) / (time.monotonic() - t0)))
else:
    # Latency: persistent connections to every port, measured in alternating rounds so that
    # machine noise hits all paths alike. argv: lat PINGS PORT...
    n, ports = int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
    conns = []
    for p in ports:
        s = socket.create_connection(("127.0.0.1", p)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(200): rt(s)
        conns.append(s)
    lat = [[] for _ in ports]
    rounds = 20
    for _ in range(rounds):
        for i, s in enumerate(conns):
            for _ in range(max(1, n // rounds)):
                t = time.perf_counter_ns(); rt(s); lat[i].append(time.perf_counter_ns() - t)
    for l in lat:
        l.sort(); print("%.1f %.1f" % (l[len(l)//2] / 1e3, l[int(len(l)*0.99)] / 1e3))
EOF
# Connection rate: interleaved rounds too (RATE_RUNS, default 3; median), since the machine
# drifts; Sigil with X25519MLKEM768 (default) and with X25519 (--key-exchange classical).
RATE_RUNS="${RATE_RUNS:-3}"
declare -a C_PLAIN C_SIG C_SIG_X C_STUN C_RATIO C_RATIO_X
for ((i = 0; i < RATE_RUNS; i++)); do
    C_PLAIN+=("$(python3 load.py rate $P_ECHO "$RATE_SECONDS")")
    C_SIG+=("$(python3 load.py rate $P_SIG_OUT_E "$RATE_SECONDS")")
    C_SIG_X+=("$(python3 load.py rate $P_SIG_OUT_C "$RATE_SECONDS")")
    C_STUN+=("$(python3 load.py rate $P_ST_OUT_E "$RATE_SECONDS")")
    C_RATIO+=("$(calc "${C_SIG[-1]}/${C_STUN[-1]}")")
    C_RATIO_X+=("$(calc "${C_SIG_X[-1]}/${C_STUN[-1]}")")
    echo "rate round $((i + 1))/$RATE_RUNS: plaintext ${C_PLAIN[-1]}  sigil ${C_SIG[-1]}  sigil-x25519 ${C_SIG_X[-1]}  stunnel4 ${C_STUN[-1]} conn/s" >&2
done
R_PLAIN=$(median "${C_PLAIN[@]}"); R_SIG=$(median "${C_SIG[@]}"); R_SIG_X=$(median "${C_SIG_X[@]}"); R_STUN=$(median "${C_STUN[@]}")
{ read -r L50_PLAIN L99_PLAIN; read -r L50_SIG L99_SIG; read -r L50_STUN L99_STUN; } \
    < <(python3 load.py lat "$PINGS" $P_ECHO $P_SIG_OUT_E $P_ST_OUT_E)

KTLS=$("$SIGIL" tunnel ktls-check 2>/dev/null || true)
echo "# $(nproc) cores, $(uname -r), iperf3 -t $DURATION -P $PARALLEL, median of $RUNS interleaved runs" >&2
echo "# $KTLS" >&2
echo "RESULT tunnel_plaintext_throughput $PLAIN Gbit/s"
echo "RESULT tunnel_sigil_throughput $SIG Gbit/s"
echo "RESULT tunnel_stunnel4_throughput $STUN Gbit/s"
echo "RESULT tunnel_sigil_vs_plaintext $(calc "$SIG/$PLAIN") ratio"
echo "RESULT tunnel_stunnel4_vs_plaintext $(calc "$STUN/$PLAIN") ratio"
echo "RESULT tunnel_sigil_vs_stunnel4 $(calc "$SIG/$STUN") ratio"
echo "RESULT tunnel_sigil_vs_plaintext_paired $(median "${R_SIG_PLAIN[@]}") ratio"
echo "RESULT tunnel_stunnel4_vs_plaintext_paired $(median "${R_STUN_PLAIN[@]}") ratio"
echo "RESULT tunnel_sigil_vs_stunnel4_paired $(median "${R_SIG_STUN[@]}") ratio"
if [[ "$KTLS" == *": available"* ]]; then
    echo "RESULT tunnel_sigil_ktls_path 1 used"
else
    echo "RESULT tunnel_sigil_ktls_path 0 unavailable"
fi
echo "RESULT tunnel_plaintext_conn_rate $R_PLAIN conn/s"
echo "RESULT tunnel_sigil_conn_rate $R_SIG conn/s"
echo "RESULT tunnel_sigil_conn_rate_x25519 $R_SIG_X conn/s"
echo "RESULT tunnel_stunnel4_conn_rate $R_STUN conn/s"
echo "RESULT tunnel_sigil_vs_stunnel4_conn_rate $(calc "$R_SIG/$R_STUN") ratio"
echo "RESULT tunnel_sigil_x25519_vs_stunnel4_conn_rate $(calc "$R_SIG_X/$R_STUN") ratio"
echo "RESULT tunnel_sigil_vs_stunnel4_conn_rate_paired $(median "${C_RATIO[@]}") ratio"
echo "RESULT tunnel_sigil_x25519_vs_stunnel4_conn_rate_paired $(median "${C_RATIO_X[@]}") ratio"
echo "# round trip of 64 B: plaintext p50 $L50_PLAIN us p99 $L99_PLAIN us; sigil p50 $L50_SIG p99 $L99_SIG; stunnel4 p50 $L50_STUN p99 $L99_STUN" >&2
echo "RESULT tunnel_sigil_added_latency_p50 $(calc "$L50_SIG-$L50_PLAIN") us"
echo "RESULT tunnel_sigil_added_latency_p99 $(calc "$L99_SIG-$L99_PLAIN") us"
echo "RESULT tunnel_stunnel4_added_latency_p50 $(calc "$L50_STUN-$L50_PLAIN") us"
echo "RESULT tunnel_stunnel4_added_latency_p99 $(calc "$L99_STUN-$L99_PLAIN") us"
