#!/usr/bin/env bash
# Builds the one image on a machine without a Docker engine or an image registry:
#   1. installs buildah and debootstrap from Debian when they are missing;
#   2. makes the base image docker.io/library/debian:bookworm-slim locally when it is absent
#      (debootstrap --variant=minbase from the Debian mirror apt already uses), so the
#      Dockerfile's `FROM debian:bookworm-slim` builds here unchanged;
#   3. builds the Dockerfile's default target with buildah (chroot isolation, vfs storage,
#      layer cache on) and prints the build time and the image size.
# With --release it builds both images a release needs, tagged with the build's own tag
# <version>-<commit>[-dirty]-<UTC build time> (e.g. 0.1.0-1a2b3c4d5e6f-20261204T150102Z):
#   <registry>/jobs:<tag>    the default target (every KFP task)
#   <registry>/worker:<tag>  the dataflow-worker target (Dataflow's --sdk_container_image;
#                            needs Docker Hub for Beam's SDK image)
# pushes them when --registry is given, and prints the digests as the pipeline parameters
# `image=...@sha256:...` and `worker_image=...@sha256:...` (schedules take digests, not tags).
# The repository's tags are immutable, so a tag names one build: a second release of the same
# version (and commit) pushes under a new tag instead of failing. BUILD_TIME overrides the time.
#
#   infra/container/build.sh                           # IMAGE=localhost/fmnist-jobs:dev
#   IMAGE=localhost/fmnist-jobs:ci infra/container/build.sh
#   infra/container/build.sh --release --registry REGION-docker.pkg.dev/PROJECT/fmnist   # terraform's image_repository
#   infra/container/build.sh --release --registry ... --dry-run   # print the commands, run nothing
#
# When it cannot run (not root, Debian mirror unreachable, debootstrap fails) it exits 1 with
# one line starting "container build cannot run:", so CI says why.
set -euo pipefail

IMAGE=${IMAGE:-localhost/fmnist-jobs:dev}
RELEASE=0
REGISTRY=""
DRY_RUN=0
while (($#)); do
    case "$1" in
        --release) RELEASE=1 ;;
        --registry)
            if (($# < 2)) || [[ $2 == -* ]]; then
                echo "error: --registry needs a value (REGION-docker.pkg.dev/PROJECT/REPOSITORY)" >&2
                exit 2
            fi
            REGISTRY=${2%/}
            shift
            ;;
        --dry-run) DRY_RUN=1 ;;
        *) echo "error: unknown argument $1 (use --release, --registry REGISTRY, --dry-run)" >&2; exit 2 ;;
    esac
    shift
done
[ -z "$REGISTRY" ] || ((RELEASE)) || { echo "error: --registry needs --release" >&2; exit 2; }
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
    # shellcheck disable=SC2016 # $(REPO_URI) is apt's own field syntax, not a shell expansion
    uri=$(apt-get indextargets --format '$(REPO_URI)' "Release: $1" 'Identifier: Packages' 2>/dev/null | head -n1)
    echo "${uri:-$2}"
}

# Runs a command, or with --dry-run prints it (shell-quoted) instead.
run() {
    if ((DRY_RUN)); then
        printf '%q ' "$@" | sed 's/ $//'
        echo
    else
        "$@"
    fi
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
    if [ -z "$root" ] || [ "$root" = / ]; then
        die "buildah mount gave no usable root folder for $ctr"
    fi
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

# The ID of image $1, or nothing when there is no such image.
image_id() {
    "${BUILDAH[@]}" images --quiet --no-trunc "$1" 2>/dev/null || true
}

# Builds Dockerfile target $1 (empty: the default target) as image $2.
build_image() {
    local target=$1 image=$2 started
    started=$(date +%s)
    # --layers: unchanged steps come from the layer cache (dependencies sit before the source).
    # The default target needs no registry: buildah skips the unused Dataflow stages.
    local ca=() targets=()
    # A machine behind a TLS-inspecting proxy names its CA bundle in PIP_CERT: pip inside the
    # build needs it too. Mounted read-only for the build only; it never enters the image.
    if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
        ca=(--volume "$PIP_CERT:/run/build-ca/ca.pem:ro" --build-arg PIP_CERT=/run/build-ca/ca.pem)
    fi
    [ -z "$target" ] || targets=(--target "$target")
    local previous=""
    if ((!DRY_RUN)); then
        previous=$(image_id "$image")
    fi
    run "${BUILDAH[@]}" bud --isolation chroot --layers "${ca[@]}" "${targets[@]}" -f Dockerfile -t "$image" .
    ((DRY_RUN)) && return 0
    echo "built $image in $(($(date +%s) - started)) s"
    # The tag now names the new image. The one it named before is left untagged, with the
    # layers of its build (full copies of the file system with vfs storage: gigabytes each),
    # and every rebuild would add more until the disk is full. Removing it removes those too;
    # the cached steps the new image shares stay.
    if [ -n "$previous" ] && [ "$previous" != "$(image_id "$image")" ]; then
        "${BUILDAH[@]}" rmi "$previous" >/dev/null || echo "warning: the former $image ($previous) is still in use: not removed" >&2
    fi
    "${BUILDAH[@]}" images --format 'image {{.Name}}:{{.Tag}} size {{.Size}}' "$image"
}

# Pushes image $2 (local name) to the registry; prints "$1=<registry image>@<digest>".
push_image() {
    local parameter=$1 image=$2 digest_file="${TMPDIR:-/tmp}/fmnist-$1.digest"
    run "${BUILDAH[@]}" push --digestfile "$digest_file" "$image" "docker://$image"
    if ((DRY_RUN)); then
        echo "$parameter=${image%:*}@sha256:<pushed digest>"
    else
        echo "$parameter=${image%:*}@$(cat "$digest_file")"
        rm -f "$digest_file"
    fi
}

# Prints "$1=<local image>@<digest>" of an image that was built, not pushed.
local_digest() {
    local parameter=$1 image=$2
    if ((DRY_RUN)); then
        echo "$parameter=${image%:*}@sha256:<local digest>"
    else
        echo "$parameter=${image%:*}@$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageDigest}}' "$image")"
    fi
}

# The tag of this build: version, commit (-dirty when the work tree differs from it), UTC time.
build_tag() {
    local version commit
    version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
    commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo nocommit)
    git diff --quiet HEAD 2>/dev/null || commit="$commit-dirty"
    echo "$version-$commit-${BUILD_TIME:-$(date -u +%Y%m%dT%H%M%SZ)}"
}

release() {
    local tag repository jobs worker
    tag=$(build_tag)
    repository=${REGISTRY:-localhost/fmnist}
    jobs="$repository/jobs:$tag"
    worker="$repository/worker:$tag"
    build_image "" "$jobs"
    build_image dataflow-worker "$worker"
    if [ -n "$REGISTRY" ]; then
        push_image image "$jobs"
        push_image worker_image "$worker"
    else
        local_digest image "$jobs"
        local_digest worker_image "$worker"
    fi
}

if ((!DRY_RUN)); then
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, and buildah with chroot isolation, run as root here)"
    ensure_tools
    "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 || bootstrap_base
fi
if ((RELEASE)); then
    release
else
    build_image "" "$IMAGE"
fi
