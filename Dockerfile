# syntax=docker/dockerfile:1
# shadowtap container image: a builder stage that builds the release binary with the eBPF
# classifier embedded (scripts/build-release.sh, the README's build step), and a small
# runtime stage with libpcap. Build: `docker build -t shadowtap .` (BuildKit).
#
# Privileges: the image runs as uid 65532 by default, which is all `replay`, `inspect`
# and `config check` need. `run` needs capabilities (eBPF: BPF, NET_ADMIN, PERFMON;
# libpcap: NET_RAW, NET_ADMIN). Kubernetes grants added capabilities to a non-root
# process only through file capabilities on the binary, and those are cancelled by
# allowPrivilegeEscalation: false (no_new_privs) and make exec fail with EPERM wherever
# the binary's capabilities are not all in the container's bounding set (so `replay` in
# a plain `docker run` would break). So there are no file capabilities here: the
# DaemonSet runs this image as uid 0 with all capabilities dropped and only the named
# ones added, no_new_privs and a read-only root. deploy/README.md has the details.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The same build packages as .ci/setup (scripts/check-deploy.sh compares the lists).
# Versions are not pinned: bookworm's security suite replaces them, and a pin would fail
# the build on the day it does.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends llvm-22-dev libpolly-22-dev libpcap-dev \
 && rm -rf /var/lib/apt/lists/*
RUN rustup toolchain install nightly --profile minimal \
 && rustup component add rust-src --toolchain nightly
RUN LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker

WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    bin="$(scripts/build-release.sh | tail -n 1)" \
 && install -D -m 0755 "$bin" /out/shadowtap \
 && strip --strip-debug /out/shadowtap

FROM ${RUNTIME_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcap0.8 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/shadowtap /usr/local/bin/shadowtap
LABEL org.opencontainers.image.title="shadowtap" \
      org.opencontainers.image.description="Shadow live HTTP/1.1 traffic to a test environment without touching the live path" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
EXPOSE 9477
ENTRYPOINT ["/usr/local/bin/shadowtap"]
CMD ["--help"]
