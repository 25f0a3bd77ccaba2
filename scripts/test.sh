#!/usr/bin/env bash
# Every check and test of the project, in the order that fails fastest.
# Root/eBPF/netns tests run for real here; under CI=true they fail rather than skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

echo "== fmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets -- -D warnings
# The build without eBPF (stable only, and what the fuzzers link) has its own cfg arms.
echo "== clippy (no eBPF)"; cargo clippy -p shadowtap --no-default-features --all-targets -- -D warnings
echo "== tests"; cargo test --workspace -- --test-threads=2
echo "== deploy"; bash scripts/check-deploy.sh
# The image built here (buildah, FROM scratch) and run under podman with only the
# capabilities the README lists; on the debug binary the tests just built.
echo "== image"; bash scripts/test-image.sh "$PWD/target/debug/shadowtap"

# The soak on the debug binary the tests just built (no release build here); the
# 10-minute run on a quiet machine is `scripts/soak.sh 10m` (docs/proofs.md, Soak).
soak=${SOAK_DURATION:-90s}
echo "== soak (${soak}, debug build)"
SHADOWTAP_BIN="$PWD/target/debug/shadowtap" bash scripts/soak.sh "$soak" 10 2 10 | tail -n 4

fuzz_secs=${FUZZ_SECONDS:-45}
echo "== fuzz (${fuzz_secs}s per target)"
# Seeds for the capture-file reader: the first 8 KiB of each corpus capture (a cut file is
# still a valid start), so the short run begins past the magic numbers and block headers.
seeds=fuzz/corpus/decode
mkdir -p "$seeds"
for f in ../shared/corpus/zeek-http/*.pcap*; do
  [ -e "$seeds/seed-${f##*/}" ] || head -c 8192 "$f" >"$seeds/seed-${f##*/}"
done
for target in decode reassembly framer h2_frames hpack h2_conn; do
  (cd fuzz && cargo +nightly fuzz run "$target" -- -max_total_time="$fuzz_secs" -rss_limit_mb=1024 2>&1 | tail -n 3)
done
echo "== all checks passed"
