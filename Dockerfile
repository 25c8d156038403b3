# stunnerd container image: a drop-in for l7mp/stunnerd.
#
# The operator overrides command and args (`stunnerd -w --udp-thread-num=16`), so the
# contract is an executable `stunnerd` on $PATH; it also probes :8086 over HTTP, so no shell
# is needed in the image. Build: `docker build -t stunnerd .`
#
# Stage 1 builds with the same commands CI runs (`cargo build --release --locked`); the
# toolchain must be >= 1.88 (quinn-udp's minimum), newer than Debian's packaged rustc, hence
# the official Rust image. Override with --build-arg RUST_IMAGE=... for a mirror.
ARG RUST_IMAGE=rust:1-slim-trixie
ARG RUNTIME_IMAGE=debian:trixie-slim

FROM ${RUST_IMAGE} AS build
# openssl-sys links the system OpenSSL (TURN-DTLS).
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not refetch and rebuild them.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
RUN cargo fetch --locked
COPY . .
RUN cargo build --release --locked --bin stunnerd \
 && install -D -m 0755 target/release/stunnerd /out/usr/bin/stunnerd

FROM ${RUNTIME_IMAGE}
# The only shared libraries besides libc: OpenSSL 3.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3t64 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/usr/bin/stunnerd /usr/bin/stunnerd
# A sample config for `docker run` without the operator (upstream ships one at the same path).
COPY config/stunnerd-udp.yaml /stunnerd.conf
WORKDIR /app
# Non-root: TURN ports above 1024 need no privilege; a config on a low port needs
# `--cap-add NET_BIND_SERVICE` or securityContext capabilities.
USER 65532:65532
EXPOSE 3478/udp 8086/tcp 8080/tcp
CMD ["stunnerd", "-c", "file:///stunnerd.conf"]
