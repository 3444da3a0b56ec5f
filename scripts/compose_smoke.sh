#!/usr/bin/env bash
# `make compose-smoke`: docker-compose.yml + docker-compose.cpu.yml brought up for real, with
# podman and podman-compose instead of Docker, on a machine that reaches Debian's mirror and
# PyPI but no container registry. Steps, each timed:
#   1. podman, runc, debootstrap, netavark and aardvark-dns from apt (when missing), and
#      podman-compose from PyPI into a venv in the cache (Debian's 1.0.3 cannot read the
#      `!reset` tag of docker-compose.cpu.yml);
#   2. a containers.conf for this run (runc, lowered default ulimits: see write_containers_conf);
#   3. the base image, once: `debootstrap --variant=minbase bookworm` with Debian's Python 3.11
#      and a venv, `podman import`ed as the stand-in for python:3.11-slim (the host's own CA
#      certificates included: pip inside the build needs them where egress is intercepted);
#   4. the service image from Dockerfile.cpu (ONNX, no torch) and a Weaviate image from the
#      go-built binary (containers/Dockerfile.weaviate), both `--format docker` so that their
#      HEALTHCHECKs survive (podman's default OCI format drops them);
#   5. an ONNX export of the shipped checkpoint (`cir export`, on the host's venv);
#   6. podman-compose up (the two compose files + the smoke override, see write_override), wait
#      until both containers are healthy, one composed query through Weaviate into the service
#      (integration/compose_smoke.py), then down, volumes and network included.
# Everything it builds is cached in $CIR_CACHE_DIR/compose-smoke (default ~/.cache/weaviate-cir):
# a second run reuses the base image, and podman's layer cache the service image.
# Needs root (rootful podman, apt, debootstrap) and the host venv of `make setup`.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "compose_smoke.sh needs root (apt, debootstrap, rootful podman)" >&2
    exit 1
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CIR_CACHE_DIR:-$HOME/.cache/weaviate-cir}
WORK=$CACHE/compose-smoke
PY=${CIR_PYTHON:-$ROOT/.venv/bin/python}
# Published on loopback only, away from the defaults (8080, 50051) that tests and a standing
# `cir up` use.
HTTP_PORT=${SMOKE_HTTP_PORT:-18380}
GRPC_PORT=${SMOKE_GRPC_PORT:-18381}
PROJECT=${SMOKE_PROJECT:-cir-smoke}
PODMAN_COMPOSE_VERSION=1.6.0
BASE_IMAGE=localhost/cir-python:3.11-slim
WEAVIATE_VERSION=$("$PY" -c 'from integration.weaviate_server import WEAVIATE_VERSION as v; print(v)')
WEAVIATE_IMAGE=localhost/cir-weaviate:$WEAVIATE_VERSION
SERVICE_IMAGE=localhost/weaviate-cir:cpu
COMPOSE=(
    "$WORK/podman-compose/bin/podman-compose" -p "$PROJECT"
    -f "$ROOT/docker-compose.yml" -f "$ROOT/docker-compose.cpu.yml"
    -f "$WORK/docker-compose.smoke.yml"
)
export CONTAINERS_CONF=$WORK/containers.conf
mkdir -p "$WORK"

# step NAME COMMAND...: run COMMAND and print how long it took (the timings of docs/results.md).
# Its status is COMMAND's, also where errexit is off (`if step ...`).
step() {
    local name=$1 start=$SECONDS status=0
    shift
    echo "== $name"
    "$@" || status=$?
    echo "== $name: $((SECONDS - start)) s$([ $status -eq 0 ] || echo ", failed ($status)")"
    return $status
}

# container SERVICE: the id of the stack's container for SERVICE (empty until it exists).
container() {
    podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1" | head -1
}

install_tools() {
    local missing=()
    for tool in podman runc debootstrap netavark aardvark-dns; do
        # netavark and aardvark-dns live in /usr/lib/podman, not on PATH.
        command -v "$tool" >/dev/null || [ -x "/usr/lib/podman/$tool" ] || missing+=("$tool")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" uidmap iptables
    fi
    local pc=$WORK/podman-compose
    if ! "$pc/bin/podman-compose" --version 2>/dev/null | grep -q "$PODMAN_COMPOSE_VERSION"; then
        "$PY" -m venv "$pc"
        "$pc/bin/pip" install -q "podman-compose==$PODMAN_COMPOSE_VERSION"
    fi
}

# podman's defaults fail here: crun cannot set limits without CAP_SYS_RESOURCE on these hybrid
# cgroups (runc can), and the default ulimits (nofile 1048576) exceed what the host lets a
# container have. Written for this run only (CONTAINERS_CONF): the host's podman is unchanged.
write_containers_conf() {
    cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
}

# What the smoke run changes in docker-compose.yml + docker-compose.cpu.yml, and nothing else:
# the Weaviate image built here (no registry), its ports on loopback away from 8080 / 50051,
# and the models folder of export_model. Written with the values in place because
# podman-compose 1.6.0 does not substitute variables inside an `!override` list.
write_override() {
    cat >"$WORK/docker-compose.smoke.yml" <<EOF
services:
  weaviate:
    image: $WEAVIATE_IMAGE
    ports: !override
      - "127.0.0.1:$HTTP_PORT:8080"
      - "127.0.0.1:$GRPC_PORT:50051"
  cir:
    volumes: !override
      - $WORK/models:/models:ro
      - trt_cache:/cache/trt
EOF
}

build_base_image() {
    if podman image exists "$BASE_IMAGE"; then
        echo "$BASE_IMAGE exists: kept"
        return
    fi
    local rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    # debootstrap does not resolve virtual packages: python3.11-venv's python3.11-distutils is
    # provided by python3-distutils, named here with its own dependencies.
    debootstrap --variant=minbase \
        --include=python3.11,python3.11-venv,python3,python3-distutils,python3-lib2to3,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian
    # The host's locally added CAs (an intercepting egress proxy's among them), so that pip and
    # apt in the build trust what the host trusts. None on an ordinary host.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates
    fi
    # python:3.11-slim has `python` and `pip` on PATH; a venv gives Debian's Python the same.
    chroot "$rootfs" python3.11 -m venv /opt/venv
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    # Debian's pip (23.0) reads its bundled certifi, not the system store: point it there.
    tar -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE"
    rm -rf "$rootfs"
}

build_service_image() {
    podman build --format docker --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
        -f "$ROOT/Dockerfile.cpu" -t "$SERVICE_IMAGE" "$ROOT"
}

build_weaviate_image() {
    local binary context=$WORK/weaviate-context
    binary=$("$PY" -c 'from integration.weaviate_server import install_weaviate as i; print(i())')
    mkdir -p "$context"
    # A hard link: the 180 MB binary is not copied (a copy where the cache is on another disk).
    ln -f "$binary" "$context/weaviate-server" 2>/dev/null || cp "$binary" "$context/"
    podman build --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        -f "$ROOT/containers/Dockerfile.weaviate" -t "$WEAVIATE_IMAGE" "$context"
}

export_model() {
    local models=$WORK/models
    if [ -f "$models/current-onnx/manifest.json" ]; then
        echo "$models/current-onnx exists: kept"
        return
    fi
    rm -rf "$models/current-onnx"
    mkdir -p "$models"
    "$PY" -m cir_module.cli export "$("$PY" -c \
        'from cir_module.checkpoints import shipped_checkpoint as s; print(s())')" \
        "$models/current-onnx" --variants fp32,int8
}

# The CPU image serves the export with no torch installed at all (not merely unimported).
check_no_torch() {
    podman run --rm --no-healthcheck "$SERVICE_IMAGE" python -c \
        'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is not None)'
    echo "no torch in $SERVICE_IMAGE"
}

# What the service container serves, from its /meta (it publishes no port: asked inside).
service_meta() {
    podman exec "$(container cir)" curl -fsS http://127.0.0.1:8080/meta \
        | "$PY" -c 'import json, sys; m = json.load(sys.stdin); print("service backend:",
            m["backend"], {k: m["model"].get(k) for k in ("name", "provider", "variant")})'
}

image_sizes() {
    podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
        | grep -E "cir-python|weaviate-cir|cir-weaviate"
}

# healthy CONTAINER: run the container's health check now. podman schedules health checks
# with systemd timers, and there is no systemd here, so nothing would run them otherwise.
healthy() {
    podman healthcheck run "$1" >/dev/null 2>&1
}

wait_healthy() {
    local deadline=$((SECONDS + 300))
    for service in cir weaviate; do
        local id
        until id=$(container "$service") && [ -n "$id" ] && healthy "$id"; do
            if [ $SECONDS -gt $deadline ]; then
                echo "$service is not healthy after 300 s" >&2
                return 1
            fi
            sleep 3
        done
        echo "$service healthy: $(podman inspect -f '{{.State.Health.Status}}' "$id")"
    done
}

down() {
    "${COMPOSE[@]}" down -v >/dev/null 2>&1 || true
}

main() {
    step "install tools" install_tools
    write_containers_conf
    write_override
    step "base image (debootstrap + podman import)" build_base_image
    step "service image (Dockerfile.cpu)" build_service_image
    step "Weaviate image (go-built binary)" build_weaviate_image
    image_sizes
    check_no_torch
    step "ONNX export of the shipped checkpoint" export_model

    WEAVIATE_API_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export WEAVIATE_API_KEY
    down  # a stack left by an interrupted run
    trap down EXIT
    step "compose up" "${COMPOSE[@]}" up -d
    if ! step "wait for health" wait_healthy; then
        "${COMPOSE[@]}" logs --tail 40 || true
        return 1
    fi
    service_meta
    step "composed query through Weaviate" "$PY" -m integration.compose_smoke \
        --url "http://127.0.0.1:$HTTP_PORT" --grpc-port "$GRPC_PORT" --api-key "$WEAVIATE_API_KEY"
    step "compose down" down
    trap - EXIT
}

# With arguments, only those functions (e.g. `scripts/compose_smoke.sh build_base_image`).
if [ $# -gt 0 ]; then
    write_containers_conf
    write_override
    "$@"
else
    main
fi
