#!/usr/bin/env bash
# Model scanner benchmark: Sigil, picklescan and modelscan (PyPI) side by side on the same input.
#
#   bench/scan.sh                 # needs: cargo, python3; makes .venv with the peers if missing
#   SIGIL_BIN=path/to/sigil bench/scan.sh   # use a prebuilt release binary
#
# 1. The labelled corpus (crates/sigil-scan/tests/corpus, from its generate.py) through all three
#    tools: detections of known-dangerous samples, false positives on benign samples, wall time
#    of each tool's CLI on the whole directory (median of ROUNDS=15 rounds, the three tools interleaved).
# 2. A generated 1 GiB pickle and a 2 GiB PyTorch zip archive: wall time and peak RSS per tool.
# 3. Hashing: `sigil models lock -j1` over both big files against coreutils `sha256sum`.
# Ends with one `RESULT <metric> <value> <unit>` line per figure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${SIGIL_BENCH_DIR:-/tmp/sigil-bench}
PY=${SIGIL_PYTHON:-$ROOT/.venv/bin/python}
mkdir -p "$WORK"

if ! "$PY" -c "import picklescan, modelscan, numpy" 2>/dev/null; then
    echo "installing peers into $ROOT/.venv (picklescan modelscan numpy)" >&2
    python3 -m venv "$ROOT/.venv"
    "$ROOT/.venv/bin/pip" install -q picklescan modelscan numpy
    PY=$ROOT/.venv/bin/python
fi
BIN=$(dirname "$PY")

if [ -n "${SIGIL_BIN:-}" ]; then
    SIGIL=$SIGIL_BIN    # a prebuilt release binary
else
    cargo build --release -q -p sigil
    SIGIL=$ROOT/target/release/sigil
fi
CORPUS=$ROOT/crates/sigil-scan/tests/corpus

# ---- big inputs --------------------------------------------------------------------------------
"$PY" - "$WORK" <<'EOF'
import os, pickle, struct, sys, zipfile
work = sys.argv[1]
pkl = os.path.join(work, "big", "model.pkl")
pt = os.path.join(work, "big", "model.pt")
os.makedirs(os.path.dirname(pkl), exist_ok=True)
MiB = 1 << 20
if not os.path.exists(pkl) or os.path.getsize(pkl) < 1 << 30:
    # 1 GiB: 1024 distinct 1 MiB byte strings plus 200k small objects (protocol 4, framed).
    obj = {"blobs": [bytes([i % 251]) * MiB for i in range(1024)],
           "meta": [{"i": i, "f": i * 0.5, "s": "x%d" % i} for i in range(200_000)]}
    with open(pkl, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    del obj
if not os.path.exists(pt) or os.path.getsize(pt) < 2 << 30:
    # 2 GiB PyTorch layout: data.pkl naming 2048 storages of 1 MiB, stored (torch.save layout).
    class P(pickle.Pickler):
        def persistent_id(self, o):
            return ("storage", "torch.FloatStorage", o[1], "cpu", MiB // 4) if isinstance(o, tuple) and o and o[0] == "S" else None
    import io
    b = io.BytesIO()
    P(b, protocol=2).dump({"layer.%d" % i: ("S", str(i)) for i in range(2048)})
    chunk = os.urandom(MiB)
    with zipfile.ZipFile(pt, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        z.writestr("model/data.pkl", b.getvalue())
        z.writestr("model/byteorder", b"little")
        for i in range(2048):
            with z.open("model/data/%d" % i, "w", force_zip64=True) as f:
                f.write(chunk)
        z.writestr("model/version", b"3\n")
EOF
BIG_PKL=$WORK/big/model.pkl
BIG_PT=$WORK/big/model.pt
cat "$BIG_PKL" "$BIG_PT" > /dev/null   # warm the page cache for every tool alike

# ---- corpus: detections and time ---------------------------------------------------------------
"$PY" - "$SIGIL" "$BIN" "$CORPUS" "$WORK" <<'EOF'
import json, os, statistics, subprocess, sys, time
sigil, bindir, corpus, work = sys.argv[1:5]
labels = json.load(open(os.path.join(corpus, "labels.json")))
files = {os.path.join(corpus, k): v["label"] for k, v in labels.items()}
dangerous = [f for f, l in files.items() if l == "dangerous"]
benign = [f for f, l in files.items() if l == "safe"]

ROUNDS = int(os.environ.get("ROUNDS", "15"))

def timed_interleaved(cmds):
    """Runs every command once per round, ROUNDS rounds, so machine noise hits all tools
    alike; returns the median wall time of each and its last result."""
    ts = [[] for _ in cmds]
    last = [None] * len(cmds)
    for _ in range(ROUNDS):
        for i, cmd in enumerate(cmds):
            t = time.perf_counter()
            last[i] = subprocess.run(cmd, capture_output=True)
            ts[i].append(time.perf_counter() - t)
    return [statistics.median(x) for x in ts], last

out = os.path.join(work, "modelscan.json")
(t_sigil, t_pickle, t_model), (r, _, _) = timed_interleaved([
    [sigil, "scan", corpus, "-o", "json", "--no-progress"],
    [os.path.join(bindir, "picklescan"), "-p", corpus],
    [os.path.join(bindir, "modelscan"), "-p", corpus, "-r", "json", "-o", out, "-l", "CRITICAL"],
])

# Sigil: JSON report of the last run.
flag_sigil = {x["path"] for x in json.loads(r.stdout) if x["verdict"] in ("dangerous", "suspicious")}

# picklescan: CLI time over the directory (above); per-file API for the accounting.
from picklescan.scanner import scan_file_path
flag_pickle = set()
t_pickle_inproc = 0.0
for f in files:
    t = time.perf_counter()
    try:
        res = scan_file_path(f)
        if res.infected_files or res.issues_count:
            flag_pickle.add(f)
    except Exception:
        pass  # picklescan raises on some malformed files (e.g. a truncated zip)
    t_pickle_inproc += time.perf_counter() - t

# modelscan: CLI time over the directory (above), JSON report of the last run for the accounting.
flag_model = set()
try:
    rep = json.load(open(out))
    for issue in rep.get("issues", []):
        # sources are relative to the scanned directory: "path" or "path:inner"
        f = os.path.join(corpus, issue.get("source", "").split(":")[0])
        if f in files:
            flag_model.add(f)
except Exception as e:
    print("modelscan report unreadable:", e, file=sys.stderr)

rows = []
for name, flagged, t in [("sigil", flag_sigil, t_sigil), ("picklescan", flag_pickle, t_pickle), ("modelscan", flag_model, t_model)]:
    det = sum(1 for f in dangerous if f in flagged)
    fp = sum(1 for f in benign if f in flagged)
    rows.append((name, det, len(dangerous) - det, fp, t))
print(f"\ncorpus: {len(files)} files, {len(dangerous)} known-dangerous, {len(benign)} benign")
print(f"{'tool':<12} {'detected':>9} {'missed':>7} {'false+':>7} {'time ms':>9}")
for n, d, m, fp, t in rows:
    print(f"{n:<12} {d:>9} {m:>7} {fp:>7} {t*1000:>9.1f}")
missed = {n: [os.path.relpath(f, corpus) for f in dangerous if f not in fl] for n, fl in [("sigil", flag_sigil), ("picklescan", flag_pickle), ("modelscan", flag_model)]}
print("sigil missed:", missed["sigil"])
with open(os.path.join(work, "results.txt"), "w") as o:
    o.write(f"RESULT corpus_files {len(files)} files\n")
    o.write(f"RESULT corpus_known_dangerous {len(dangerous)} files\n")
    for n, d, m, fp, t in rows:
        o.write(f"RESULT {n}_detected {d} files\n")
        o.write(f"RESULT {n}_missed_dangerous {m} files\n")
        o.write(f"RESULT {n}_false_positives {fp} files\n")
        o.write(f"RESULT {n}_corpus_time {t*1000:.1f} ms\n")
    o.write(f"RESULT picklescan_corpus_inprocess_time {t_pickle_inproc*1000:.1f} ms\n")
    o.write(f"RESULT sigil_speedup_vs_picklescan_corpus {t_pickle / t_sigil:.1f} x\n")
    o.write(f"RESULT sigil_speedup_vs_modelscan_corpus {t_model / t_sigil:.1f} x\n")
EOF

# ---- big files: time and peak memory -----------------------------------------------------------
measure() { # name file cmd...
    local name=$1 file=$2; shift 2
    local t
    /usr/bin/time -f "%e %M" -o "$WORK/time.txt" timeout 900 "$@" > /dev/null 2>&1 || true
    t=$(tail -1 "$WORK/time.txt")
    echo "RESULT ${name}_time $(echo "$t" | cut -d' ' -f1) s" >> "$WORK/results.txt"
    echo "RESULT ${name}_peak_rss $(( $(echo "$t" | cut -d' ' -f2) / 1024 )) MiB" >> "$WORK/results.txt"
}
measure sigil_corpus_1file "$CORPUS" "$SIGIL" scan --no-progress "$CORPUS/benign/pytorch/model.pt"
measure sigil_1gib_pickle "$BIG_PKL" "$SIGIL" scan --no-progress "$BIG_PKL"
measure sigil_2gib_pytorch "$BIG_PT" "$SIGIL" scan --no-progress "$BIG_PT"
measure picklescan_1gib_pickle "$BIG_PKL" "$BIN/picklescan" -p "$BIG_PKL"
measure picklescan_2gib_pytorch "$BIG_PT" "$BIN/picklescan" -p "$BIG_PT"
measure modelscan_1gib_pickle "$BIG_PKL" "$BIN/modelscan" -p "$BIG_PKL" -l CRITICAL
measure modelscan_2gib_pytorch "$BIG_PT" "$BIN/modelscan" -p "$BIG_PT" -l CRITICAL

# ---- hashing -----------------------------------------------------------------------------------
BYTES=$(( $(stat -c %s "$BIG_PKL") + $(stat -c %s "$BIG_PT") ))
t0=$(date +%s.%N); "$SIGIL" models lock "$WORK/big" -j 1 -o "$WORK/big.lock" 2>/dev/null; t1=$(date +%s.%N)
t2=$(date +%s.%N); sha256sum "$BIG_PKL" "$BIG_PT" > /dev/null; t3=$(date +%s.%N)
python3 - "$BYTES" "$t0" "$t1" "$t2" "$t3" >> "$WORK/results.txt" <<'EOF'
import sys
b, t0, t1, t2, t3 = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"RESULT sigil_sha256_one_core {b / (t1 - t0) / 1e9:.2f} GB/s")
print(f"RESULT sha256sum_one_core {b / (t3 - t2) / 1e9:.2f} GB/s")
print(f"RESULT sigil_sha256_vs_sha256sum {(t3 - t2) / (t1 - t0):.2f} x")
EOF

echo
cat "$WORK/results.txt"
