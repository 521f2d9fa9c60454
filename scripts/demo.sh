#!/usr/bin/env bash
# Runs Drydock's main job on this machine with embedded defaults: a server (SQLite, a data
# folder, local BuildKit builders), a development OIDC issuer standing in for Buildkite, and
# the CI step's flow: OIDC exchange, buildx setup, docker login, and a two-platform build of
# examples/hello pushed to Drydock's registry. Everything it starts is stopped at the end.
#
# Expects `make setup` and `make build` to have run (`make demo` does both).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${DRYDOCK_BIN_DIR:-$REPO_DIR/target/debug}"
ROOTFS_DIR="${DRYDOCK_CACHE_DIR:-$REPO_DIR/.cache}/rootfs"
WORK_DIR="$(mktemp -d /tmp/drydock-demo.XXXXXX)"
PLATFORMS="linux/amd64,linux/arm64"
AUDIENCE="drydock-demo"

export PATH="$BIN_DIR:$PATH"
export DRYDOCK_CONFIG_DIR="$WORK_DIR/client"
export DOCKER_CONFIG="$WORK_DIR/docker"

say() { printf '\n==> %s\n' "$*"; }

PIDS=()
cleanup() {
  local status=$?
  drydock docker buildx cleanup >/dev/null 2>&1 || true
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 ]]; then
    echo "demo failed; logs are in $WORK_DIR (server.log, issuer.log)" >&2
  else
    rm -rf "$WORK_DIR"
  fi
}
trap cleanup EXIT

wait_for_file() {
  local file=$1 what=$2
  for _ in $(seq 1 100); do
    [[ -s "$file" ]] && return 0
    sleep 0.1
  done
  echo "$what did not start; see $WORK_DIR" >&2
  return 1
}

say "Starting the development OIDC issuer (stands in for Buildkite's)"
drydock-dev-oidc-issuer --listen 127.0.0.1:0 --url-file "$WORK_DIR/issuer-url" \
  --organization acme --pipeline app >"$WORK_DIR/issuer.log" 2>&1 &
PIDS+=($!)
wait_for_file "$WORK_DIR/issuer-url" "the OIDC issuer"
ISSUER="$(cat "$WORK_DIR/issuer-url")"
echo "issuer: $ISSUER"

say "Starting the Drydock server (SQLite and blobs in $WORK_DIR/data)"
drydock server --listen 127.0.0.1:0 --data-dir "$WORK_DIR/data" \
  --url-file "$WORK_DIR/server-url" >"$WORK_DIR/server.log" 2>&1 &
PIDS+=($!)
wait_for_file "$WORK_DIR/server-url" "the Drydock server"
export DRYDOCK_SERVER="$(cat "$WORK_DIR/server-url")"
REGISTRY="${DRYDOCK_SERVER#http://}"
echo "server: $DRYDOCK_SERVER"

say "Operator: create workspace acme and trust the issuer for pipeline acme/app"
DRYDOCK_TOKEN="$(cat "$WORK_DIR/data/admin-token")" drydock admin workspace create acme
DRYDOCK_TOKEN="$(cat "$WORK_DIR/data/admin-token")" drydock admin trust add --workspace acme \
  --issuer "$ISSUER" --audience "$AUDIENCE" --subject 'organization:acme:pipeline:app:*'

say "CI step: request an OIDC token (Buildkite-shaped, from the development issuer)"
OIDC_TOKEN="$(curl -fsS -X POST -H 'content-type: application/json' \
  -d "{\"audience\": \"$AUDIENCE\", \"organization\": \"acme\", \"pipeline\": \"app\", \"branch\": \"main\"}" \
  "$ISSUER/token" | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"

say "CI step: drydock auth exchange-oidc-token"
DRYDOCK_OIDC_TOKEN="$OIDC_TOKEN" drydock auth exchange-oidc-token --workspace acme

say "CI step: drydock docker buildx setup --background --use"
drydock docker buildx setup --background --use

say "CI step: drydock docker login"
drydock docker login

say "Building the busybox base image into acme's repositories"
docker buildx build --builder drydock-remote --platform "$PLATFORMS" \
  -f "$REPO_DIR/examples/base/Dockerfile" -t "$REGISTRY/acme/busybox:latest" --push "$ROOTFS_DIR"

say "CI step: docker buildx build --push (examples/hello)"
BUILD_TOKEN="demo-secret-value" docker buildx build --builder drydock-remote --platform "$PLATFORMS" \
  --build-arg BASE_IMAGE="$REGISTRY/acme/busybox:latest" --secret id=build_token,env=BUILD_TOKEN \
  -t "$REGISTRY/acme/hello:latest" --push "$REPO_DIR/examples/hello"

say "Pushed image"
docker buildx imagetools inspect "$REGISTRY/acme/hello:latest"
PLATFORMS_PUSHED="$(skopeo inspect --raw --tls-verify=false "docker://$REGISTRY/acme/hello:latest" \
  | python3 -c 'import json,sys; print(", ".join(sorted(m["platform"]["os"]+"/"+m["platform"]["architecture"] for m in json.load(sys.stdin)["manifests"] if m["platform"]["os"] != "unknown")))')"
echo
echo "Image: $REGISTRY/acme/hello:latest"
echo "Platforms: $PLATFORMS_PUSHED"
