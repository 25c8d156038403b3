# stunnerd container image: a drop-in for l7mp/stunnerd.
#
# Like upstream's image: `FROM scratch`, the binary at /usr/bin/stunnerd, a sample config at
# /stunnerd.conf, WORKDIR /app, `CMD ["stunnerd", "-c", "/stunnerd.conf"]`. The STUNner
# operator overrides command and args (`stunnerd -w --udp-thread-num=16`) and probes :8086
# over HTTP, so no shell is needed. Unlike upstream it runs as uid/gid 65532 (ports above
# 1024 need no privilege; a listener on a lower port needs NET_BIND_SERVICE).
#
# The binary is statically linked (glibc with `+crt-static`, OpenSSL from Debian's libssl.a
# and libcrypto.a with OPENSSL_STATIC=1) and stripped, so the runtime stage holds that one
# file and the sample config.
#
#   docker build -t stunnerd .                 (or podman build)
#   scripts/image.sh                           (podman, with the builder stage run on the host)
#
# scripts/dockerfile-build-steps.sh runs the build stage's COPY and RUN steps on exactly the
# files copied here (CI runs it); keep the two in step.
ARG RUST_IMAGE=rust:1-slim-trixie

FROM ${RUST_IMAGE} AS build
# pkg-config and libssl-dev (with the static libraries) for openssl-sys; binutils for strip;
# clang and libbpf-dev for build.rs to compile the eBPF offload (bpf/offload.c).
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev binutils clang libbpf-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Every target Cargo.toml names ([[bin]] turnperf, [[bench]] codec and metrics) must exist
# for cargo to read the manifest, even though only stunnerd is built.
COPY Cargo.toml Cargo.lock rust-toolchain.toml build.rs ./
COPY bpf/ bpf/
COPY src/ src/
COPY benches/ benches/
COPY config/stunnerd-container.yaml config/stunnerd-container.yaml
ENV OPENSSL_STATIC=1
ENV RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\""
RUN cargo fetch --locked
RUN cargo build --release --locked --target x86_64-unknown-linux-gnu --bin stunnerd
RUN install -D -m 0755 "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/stunnerd" out/usr/bin/stunnerd && strip out/usr/bin/stunnerd && install -D -m 0644 config/stunnerd-container.yaml out/stunnerd.conf && install -d -m 0755 out/app

FROM scratch
# /usr/bin/stunnerd, /stunnerd.conf and an empty /app (buildah's WORKDIR does not create it).
COPY --from=build /src/out/ /
WORKDIR /app
USER 65532:65532
EXPOSE 3478/udp
CMD ["stunnerd", "-c", "/stunnerd.conf"]
