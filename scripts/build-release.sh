#!/usr/bin/env bash
# The one release build of shadowtap: the README's build step and the Dockerfile's builder
# stage both run this script (scripts/check-deploy.sh checks that they do), so the image
# holds exactly what a source build gives. Needs what .ci/setup installs for building:
# nightly + rust-src and bpf-linker (agent/build.rs compiles the eBPF classifier with them
# and embeds it), llvm-22 and libpcap-dev.
# Prints the path of the binary on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p shadowtap

bin=${CARGO_TARGET_DIR:-target}/release/shadowtap
# The classifier is an ELF relocatable object for EM_BPF (247) inside the binary; a build
# without the `ebpf` feature would still link and only fail at `run --engine ebpf`.
if ! LC_ALL=C grep -q -aP '\x7fELF\x02\x01\x01.{9}\x01\x00\xf7\x00' "$bin"; then
  echo "build-release: $bin has no embedded eBPF object" >&2
  exit 1
fi
echo "$bin"
