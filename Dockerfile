# The one image of fmnist-jobs: every step runs as `fmnist <step> ...` (KFP tasks, local
# smoke runs); the `dataflow-worker` target is the same environment as a Dataflow SDK image.
#
#   buildah bud --isolation chroot --storage-driver vfs --layers -t fmnist-jobs .   # default target
#   docker build -t fmnist-jobs .                                                    # same, elsewhere
#   docker build --target dataflow-worker -t fmnist-jobs-worker .                    # needs Docker Hub
#
# Layers go from least to most often changed: OS packages, the user, the pinned dependencies,
# and last the project source, so a code change rebuilds only the final layers.
# checkov:skip=CKV_DOCKER_2: batch jobs run to completion and exit; there is no long-running service for a HEALTHCHECK to probe

# Debian 12: its python3 is 3.11, the version the project supports and the lock was made with.
FROM debian:bookworm-slim AS base

# Python 3.11 and venv from Debian (security updates come with the distribution); the real
# Fashion-MNIST data set as the embedded default source of `fmnist prepare`; no recommended
# extras, and apt's lists dropped in the same layer so they never reach the image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric non-root user: Kubernetes `runAsNonRoot` can only verify a numeric USER,
# and the jobs write only to storage URIs and their home folder, never to the image.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin fmnist

# The virtualenv first on PATH, so `fmnist` and `python` are the project's; unbuffered
# output, so log lines reach KFP / Cloud Logging as they happen.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1


# The runtime dependency list (pyproject's [project].dependencies, not the test extra), in a
# throwaway stage: the layer cache then keys the large install below on this list, and an edit
# elsewhere in pyproject.toml (version, extras, tool settings) reinstalls nothing.
FROM base AS requirements
COPY pyproject.toml /tmp/
RUN python3 -c "import tomllib; deps = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))"


FROM base AS app

# Only what pins the dependencies: the next (large) layer is rebuilt when they change, not
# when the code does.
COPY --from=requirements /tmp/requirements.txt /tmp/fmnist/requirements.txt
COPY requirements.lock /tmp/fmnist/requirements.lock

# Set only on machines whose HTTPS goes through a TLS-inspecting proxy: the path of that
# proxy's CA bundle, which infra/container/build.sh mounts read-only for the build. It is
# neither copied into a layer nor kept in the image's environment.
ARG PIP_CERT

# The runtime dependencies at the exact versions of requirements.lock; --no-cache-dir keeps
# pip's download cache out of the layer. TensorFlow's C++ headers (~290 MB, for compiling
# custom ops) are never used at run time: removed in the same layer, so they never ship.
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir --disable-pip-version-check --quiet \
        -c /tmp/fmnist/requirements.lock -r /tmp/fmnist/requirements.txt \
    && rm -rf "$VIRTUAL_ENV"/lib/python3.11/site-packages/tensorflow/include

# The source (.dockerignore admits only pyproject.toml, requirements.lock, README.md,
# components/ and jobs/), installed as a regular package with the same constraints; `pip check`
# fails the build on a broken dependency set; the source copy is removed after installing.
COPY . /tmp/fmnist/
RUN pip install --no-cache-dir --disable-pip-version-check --quiet -c /tmp/fmnist/requirements.lock /tmp/fmnist \
    && pip check \
    && rm -rf /tmp/fmnist

# Everything after this runs as the unprivileged user, in its writable home.
USER 10001:10001
WORKDIR /home/fmnist

# `docker run IMAGE train --data ...` == `fmnist train --data ...`; KFP tasks name the command.
ENTRYPOINT ["fmnist"]
CMD ["--help"]


# Beam's SDK image of the Beam version pinned in requirements.lock (a test keeps them equal).
# Read only by `dataflow-worker`: buildah and BuildKit skip it when building the default target.
FROM apache/beam_python3.11_sdk:2.77.0 AS beam-sdk

# Dataflow worker: the same interpreter, packages and code as the jobs, plus Beam's boot
# program, which Dataflow starts as the container's entrypoint.
FROM app AS dataflow-worker
# Beam's boot files (the `boot` launcher and its helpers), from the SDK image of the same Beam version.
COPY --from=beam-sdk /opt/apache/beam /opt/apache/beam
# Beam's own SDK images run the boot program as root, writing to volumes the Dataflow worker
# VM mounts; keep that tested setup here. The VM is the isolation boundary for these workers.
USER root
# The boot program must be the entrypoint of a Dataflow custom container.
ENTRYPOINT ["/opt/apache/beam/boot"]
CMD []


# The default target (last stage): the jobs image as built in `app`, as the unprivileged user.
FROM app AS jobs
# Restated so the default target's user is explicit here, after the worker stage's root.
USER 10001:10001
