#!/usr/bin/env bash
# Encryption at rest: the same file sealed and unsealed by `sigil seal`, `age` (X25519 recipient,
# ChaCha20-Poly1305 STREAM, 64 KiB chunks) and `openssl enc -aes-256-ctr`, in one run.
#
# `openssl enc` refuses AEAD modes ("enc: AEAD ciphers not supported"), so its row is AES-256-CTR:
# no integrity at all, a speed reference only. Sigil and age both authenticate every chunk.
#
# Usage: bench/seal.sh            (SIZE=4G default; SIZE=512M for a quick run; PROFILE=dev skips
#                                  the release build; DIR=... picks the scratch directory)
# The scratch directory is /dev/shm when it has room for three copies (input, sealed, unsealed),
# else /tmp; so disk speed does not decide the figures. Each output is compared with the input.
# GB/s are 10^9 bytes of plaintext per second. "per core" divides by the CPU seconds the tool
# used (user + sys), so a multi-threaded tool is not credited for having more cores.
# Prints `RESULT <metric> <value> <unit>` lines at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
SIZE="$(numfmt --from=iec "${SIZE:-4G}")"
command -v age >/dev/null || { echo "age not found: apt-get install -y age" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 2; }

cargo build -q --profile "$PROFILE" -p sigil
bindir=release; [ "$PROFILE" = dev ] && bindir=debug
SIGIL="$PWD/target/$bindir/sigil"

need_kb=$(( SIZE * 3 / 1024 + 65536 ))
if [ -z "${DIR:-}" ]; then
  if [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt "$need_kb" ]; then DIR=/dev/shm; else DIR=/tmp; fi
fi
[ "$(df -Pk "$DIR" | awk 'NR==2 {print $4}')" -gt "$need_kb" ] || {
  echo "not enough space in $DIR for 3 x $SIZE bytes; set SIZE or DIR" >&2; exit 2; }
W="$(mktemp -d "$DIR/sigil-seal-bench.XXXXXX")"
trap 'rm -rf "$W"' EXIT
echo "scratch: $W ($(df -h "$DIR" | awk 'NR==2 {print $1}')), size $SIZE bytes, $(nproc) cores" >&2
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" >&2

# Incompressible input, fast to make (AES-CTR keystream of zeros).
openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 0 -nosalt -in /dev/zero 2>/dev/null \
  | head -c "$SIZE" > "$W/in"
head -c 32 /dev/urandom > "$W/key" && chmod 600 "$W/key"
age-keygen -o "$W/age.id" 2>/dev/null
AGE_R="$(age-keygen -y "$W/age.id")"
OSSL_K="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
OSSL_IV="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# run NAME CMD...: times CMD, records wall and cpu seconds in $W/NAME.t
run() {
  local name="$1"; shift
  sync
  /usr/bin/time -f "%e %U %S" -o "$W/$name.t" "$@"
  read -r wall user sys < "$W/$name.t"
  awk -v n="$name" -v s="$SIZE" -v w="$wall" -v u="$user" -v y="$sys" 'BEGIN {
    c = u + y; if (c <= 0) c = 0.001; if (w <= 0) w = 0.001;
    printf "%-16s wall %7.2fs  cpu %7.2fs  %6.2f GB/s  %6.2f GB/s/core\n", n, w, c, s/w/1e9, s/c/1e9 }' >&2
}

check() { cmp -s "$W/in" "$1" || { echo "MISMATCH: $1 differs from the input" >&2; exit 1; }; rm -f "$1"; }

run sigil_seal "$SIGIL" seal "$W/in" -o "$W/in.sigil" --asset bench --key-file "$W/key" --no-progress
run sigil_unseal "$SIGIL" unseal "$W/in.sigil" -o "$W/out.sigil" --key-file "$W/key" --no-progress
check "$W/out.sigil"; rm -f "$W/in.sigil"
run sigil1_seal "$SIGIL" seal "$W/in" -o "$W/in.sigil" --asset bench --key-file "$W/key" --no-progress --jobs 1
run sigil1_unseal "$SIGIL" unseal "$W/in.sigil" -o "$W/out.sigil" --key-file "$W/key" --no-progress --jobs 1
check "$W/out.sigil"; rm -f "$W/in.sigil"

run age_seal age -r "$AGE_R" -o "$W/in.age" "$W/in"
run age_unseal age -d -i "$W/age.id" -o "$W/out.age" "$W/in.age"
check "$W/out.age"; rm -f "$W/in.age"

run openssl_seal openssl enc -aes-256-ctr -K "$OSSL_K" -iv "$OSSL_IV" -in "$W/in" -out "$W/in.ctr"
run openssl_unseal openssl enc -d -aes-256-ctr -K "$OSSL_K" -iv "$OSSL_IV" -in "$W/in.ctr" -out "$W/out.ctr"
check "$W/out.ctr"; rm -f "$W/in.ctr"

echo "RESULT seal_bytes $SIZE bytes"
awk -v s="$SIZE" -v d="$W" 'function t(n,   f, w, u, y) { f = d "/" n ".t"; getline line < f; close(f);
    split(line, a, " "); W[n] = (a[1] > 0 ? a[1] : 0.001); C[n] = a[2] + a[3]; if (C[n] <= 0) C[n] = 0.001 }
  BEGIN {
    split("sigil_seal sigil_unseal sigil1_seal sigil1_unseal age_seal age_unseal openssl_seal openssl_unseal", names, " ");
    for (i in names) t(names[i]);
    for (i = 1; i <= 8; i++) { n = names[i];
      printf "RESULT %s_gbps %.2f GB/s\n", n, s / W[n] / 1e9;
      printf "RESULT %s_gbps_per_core %.2f GB/s\n", n, s / C[n] / 1e9 }
    split("seal unseal", ops, " ");
    for (j = 1; j <= 2; j++) { o = ops[j];
      printf "RESULT sigil_vs_age_%s_per_core %.1f x\n", o, C["age_" o] / C["sigil_" o];
      printf "RESULT sigil_vs_age_%s_wall %.1f x\n", o, W["age_" o] / W["sigil_" o];
      printf "RESULT sigil_vs_openssl_ctr_%s_wall %.2f x\n", o, W["openssl_" o] / W["sigil_" o] }
  }'
