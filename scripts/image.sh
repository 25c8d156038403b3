#!/usr/bin/env bash
# Builds the container image with podman (Debian's `podman`/`buildah`), for real.
#
# NOT RUN IN CI (scripts/test.sh does not call it): it needs podman and writes to podman's
# image store. Run it by hand; scripts/image-check.sh then checks the image.
#
# The Dockerfile's builder stage needs the official Rust image from a registry. Here it runs
# on the host instead (scripts/dockerfile-build-steps.sh: the stage's COPY and RUN steps, on
# exactly the files it copies), and `podman build --build-context build=DIR` stands in for
# that stage: `COPY --from=build /src/out/ /` reads DIR/src/out. Podman then skips the
# unused builder stage and builds the runtime stage (`FROM scratch`) from the Dockerfile as
# written. With registry access, `podman build -t stunnerd .` builds both stages itself.
#
# Usage: scripts/image.sh [TAG]          (default tag: localhost/stunnerd:dev)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
tag="${1:-localhost/stunnerd:dev}"

log() { printf '[image] %s\n' "$*"; }
command -v podman >/dev/null 2>&1 || { echo "image.sh: needs podman (apt-get install podman buildah)" >&2; exit 1; }

tmp="$(mktemp -d -t stunnerd-image.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

log "builder stage on the host (scripts/dockerfile-build-steps.sh)"
bash scripts/dockerfile-build-steps.sh --out "$tmp/build/src/out"

# The build context holds only the Dockerfile: the runtime stage copies nothing from it.
mkdir -p "$tmp/context"
cp Dockerfile "$tmp/context/Dockerfile"
log "podman build -t $tag --build-context build=$tmp/build"
podman build --pull=never -t "$tag" --build-context "build=$tmp/build" -f "$tmp/context/Dockerfile" "$tmp/context"

size="$(podman image inspect --format '{{.Size}}' "$tag")"
log "built $tag: $size bytes ($(( (size + 524288) / 1048576 )) MiB)"
