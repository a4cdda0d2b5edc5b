#!/usr/bin/env bash
# Builds the one image on a machine without a Docker engine or an image registry:
#   1. installs buildah and debootstrap from Debian when they are missing;
#   2. makes the base image docker.io/library/debian:bookworm-slim locally when it is absent
#      (debootstrap --variant=minbase from the Debian mirror apt already uses), so the
#      Dockerfile's `FROM debian:bookworm-slim` builds here unchanged;
#   3. builds the Dockerfile's default target with buildah (chroot isolation, vfs storage,
#      layer cache on) and prints the build time and the image size.
#
#   infra/container/build.sh                           # IMAGE=localhost/fmnist-jobs:dev
#   IMAGE=localhost/fmnist-jobs:ci infra/container/build.sh
#
# When it cannot run (not root, Debian mirror unreachable, debootstrap fails) it exits 1 with
# one line starting "container build cannot run:", so CI says why.
set -euo pipefail

IMAGE=${IMAGE:-localhost/fmnist-jobs:dev}
BASE_IMAGE=docker.io/library/debian:bookworm-slim
SUITE=bookworm
# vfs: no overlay/fuse support needed; chroot isolation: no user namespaces or runtime needed.
BUILDAH=(buildah --storage-driver vfs)
cd "$(dirname "$0")/../.."

die() {
    echo "container build cannot run: $*" >&2
    exit 1
}

ensure_tools() {
    local missing=()
    command -v buildah >/dev/null || missing+=(buildah)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    ((${#missing[@]} == 0)) && return 0
    echo "installing ${missing[*]} from Debian"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        || die "apt-get could not install ${missing[*]} (is the Debian mirror reachable?)"
}

# The mirror apt on this machine uses for release $1, else Debian's default ($2).
debian_mirror() {
    local uri
    uri=$(apt-get indextargets --format '$(REPO_URI)' "Release: $1" 'Identifier: Packages' 2>/dev/null | head -n1)
    echo "${uri:-$2}"
}

# Writes $2 into the file $1 (the base image's configuration files below).
put() { printf '%s\n' "$2" >"$1"; }

# Like the published debian:bookworm-slim: minbase, Debian's deb822 sources (with updates and
# security), docs/man/locales of later packages not installed, apt caches cleaned after every
# install. debootstrap writes into a mounted scratch container, which is then committed.
bootstrap_base() {
    local ctr root mirror started log=/tmp/fmnist-debootstrap.log
    mirror=$(debian_mirror "$SUITE" http://deb.debian.org/debian/)
    started=$(date +%s)
    ctr=$("${BUILDAH[@]}" from scratch)
    root=$("${BUILDAH[@]}" mount "$ctr")
    [ -n "$root" ] && [ "$root" != / ] || die "buildah mount gave no usable root folder for $ctr"
    echo "bootstrapping $BASE_IMAGE: debootstrap --variant=minbase $SUITE from $mirror"
    if ! debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        "${BUILDAH[@]}" rm "$ctr" >/dev/null
        die "debootstrap $SUITE from $mirror failed (log: $log)"
    fi
    rm -f "$root/etc/apt/sources.list"
    put "$root/etc/apt/sources.list.d/debian.sources" "Types: deb
URIs: ${mirror%/}
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $(debian_mirror "$SUITE-security" http://deb.debian.org/debian-security/)
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    put "$root/etc/dpkg/dpkg.cfg.d/docker" "path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias"
    put "$root/etc/apt/apt.conf.d/docker-clean" 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";'
    (
        cd "$root" || exit 1
        rm -rf ./var/lib/apt/lists/* ./var/cache/apt/archives/*.deb ./usr/share/man/* ./usr/share/info/* \
            ./var/log/*.log ./tmp/*
        find ./usr/share/doc -mindepth 2 ! -name copyright ! -type d -delete
    )
    rm -f "$log"
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    "${BUILDAH[@]}" config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    "${BUILDAH[@]}" commit --rm -q "$ctr" "$BASE_IMAGE" >/dev/null
    echo "base image $BASE_IMAGE ready in $(($(date +%s) - started)) s"
}

build_image() {
    local started
    started=$(date +%s)
    # --layers: unchanged steps come from the layer cache (dependencies sit before the source).
    # The default target needs no registry: buildah skips the unused Dataflow stages.
    local ca=()
    # A machine behind a TLS-inspecting proxy names its CA bundle in PIP_CERT: pip inside the
    # build needs it too. Mounted read-only for the build only; it never enters the image.
    if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
        ca=(--volume "$PIP_CERT:/run/build-ca/ca.pem:ro" --build-arg PIP_CERT=/run/build-ca/ca.pem)
    fi
    "${BUILDAH[@]}" bud --isolation chroot --layers "${ca[@]}" -f Dockerfile -t "$IMAGE" .
    echo "built $IMAGE in $(($(date +%s) - started)) s"
    "${BUILDAH[@]}" images --format 'image {{.Name}}:{{.Tag}} size {{.Size}}' "$IMAGE"
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, and buildah with chroot isolation, run as root here)"
ensure_tools
"${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 || bootstrap_base
build_image
