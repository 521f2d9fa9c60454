#!/usr/bin/env bash
# Installs what the Drydock demo and tests need on a Debian 12 (amd64) machine, as root.
# That is Debian packages, the Go tools under tools/go/, the binfmt_misc entry for linux/arm64
# under QEMU, static busybox root filesystems, and the OCI conformance suite's test binary
# (tools/go-test/conformance). The Go tools are BuildKit, buildx, the CNCF registry, and MinIO,
# the S3 server that the S3 blob store tests run against.
# Every step checks what is already in place and skips it, so a second run only reports "present".
#
# Environment:
#   DRYDOCK_CACHE_DIR  folder for downloaded packages and root filesystems (default: REPO/.cache)
set -Eeuo pipefail

# --- Pinned versions (the only place they are written) ----------------------------------------

# Debian 12 packages, as `apt-cache policy NAME` lists them. When Debian publishes a point
# release the old version leaves the mirror, and this list needs the new one.
APT_PACKAGES=(
  "runc=1.1.5+ds1-1+deb12u1"
  "qemu-user-static=1:7.2+dfsg-7+deb12u18+b3"
  "skopeo=1.9.3+ds1-1+b10"
  "busybox-static=1:1.35.0-4+deb12u1+b1"
  "apache2-utils=2.4.71-1~deb12u1"
  # CNI plugins and iptables, which BuildKit's bridge network mode (networkMode = "bridge") uses.
  "containernetworking-plugins=1.1.1+ds1-3+b5"
  "iptables=1.8.9-2"
)
# Unpacked into the arm64 root filesystem, never installed.
BUSYBOX_ARM64_VERSION="1:1.35.0-4+deb12u1+b1"

# Go tools are pinned by the go.mod of their scratch module under tools/go/<name>/. The linker
# variable that carries each module's version, because `go build` leaves it at a placeholder
# such as "v0.0.0+unknown". An empty value means the module embeds its own version.
declare -A GO_VERSION_VARIABLE=(
  ["github.com/moby/buildkit"]="github.com/moby/buildkit/version.Version"
  ["github.com/docker/buildx"]="github.com/docker/buildx/version.Version"
  ["github.com/distribution/distribution/v3"]="github.com/distribution/distribution/v3/version.version"
  ["github.com/buildkite/agent/v3"]=""
  # MinIO tags no semantic versions, so the pin is a pseudo-version. ReleaseTag is what
  # `minio --version` prints.
  ["github.com/minio/minio"]="github.com/minio/minio/cmd.ReleaseTag"
)

# Installed names for tool packages whose Go default name (the last path element without a
# /vN suffix) differs from the name users run.
declare -A GO_BINARY_NAME=(
  ["github.com/buildkite/agent/v3"]="buildkite-agent"
)

# --- Paths -------------------------------------------------------------------------------------

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${DRYDOCK_CACHE_DIR:-$REPO_DIR/.cache}"
ROOTFS_DIR="$CACHE_DIR/rootfs"
BIN_DIR=/usr/local/bin
DOCKER_PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
BINFMT_DIR=/proc/sys/fs/binfmt_misc
QEMU_AARCH64_CONF=/usr/lib/binfmt.d/qemu-aarch64.conf

# Applets linked in each root filesystem. Explicit links instead of `busybox --install -s`,
# because running the arm64 busybox to list its applets would itself need binfmt.
BUSYBOX_APPLETS=(
  sh ash ls cat echo uname mkdir rmdir cp mv rm ln touch chmod chown test "[" grep egrep sed awk
  env sleep true false printf id whoami hostname wc head tail tr cut sort uniq tee xargs find
  basename dirname readlink realpath stat du df pwd date expr seq yes ps kill tar gzip gunzip
  sha256sum md5sum which vi
)

# --- Output and failure reporting --------------------------------------------------------------

LOG_FILE="$(mktemp /tmp/drydock-setup.XXXXXX.log)"
STEP="start"
FIX="rerun scripts/setup.sh"

say() { printf 'setup: %s\n' "$*"; }

on_error() {
  local status=$?
  # A failing subshell exits quietly, because its parent shell reports the same failure.
  [[ "$BASH_SUBSHELL" == 0 ]] || exit "$status"
  printf 'setup: step "%s" failed (exit %s)\n' "$STEP" "$status" >&2
  if [[ -s "$LOG_FILE" ]]; then
    printf 'setup: last lines of %s:\n' "$LOG_FILE" >&2
    tail -n 20 "$LOG_FILE" | sed 's/^/    /' >&2
  fi
  printf 'setup: fix: %s\n' "$FIX" >&2
  exit "$status"
}
trap on_error ERR

# Begins a step: its name and the fix printed if it fails.
step() {
  STEP="$1"
  FIX="$2"
  : >"$LOG_FILE"
}

# Runs a command with its output in the log file, which is printed only on failure.
quiet() { "$@" >>"$LOG_FILE" 2>&1; }

fail() {
  printf 'setup: step "%s" failed: %s\n' "$STEP" "$1" >&2
  printf 'setup: fix: %s\n' "$FIX" >&2
  exit 1
}

# --- Checks ------------------------------------------------------------------------------------

check_machine() {
  step "check machine" "run as root on Debian 12 (amd64)"
  [[ "$(id -u)" == 0 ]] || fail "must run as root (uid is $(id -u))"
  [[ "$(dpkg --print-architecture)" == amd64 ]] ||
    fail "expected an amd64 machine, found $(dpkg --print-architecture)"
  command -v go >/dev/null || fail "go is not on PATH"
  FIX="install the docker CLI (only the client is needed; no daemon runs)"
  command -v docker >/dev/null || fail "docker is not on PATH"
  command -v cargo >/dev/null || fail "cargo is not on PATH"
}

# --- Debian packages ---------------------------------------------------------------------------

APT_UPDATED=0
apt_update_once() {
  if [[ "$APT_UPDATED" == 0 ]]; then
    local step_fix="$FIX"
    FIX="check that apt reaches the Debian mirror in /etc/apt/sources.list(.d)"
    quiet apt-get update
    FIX="$step_fix"
    APT_UPDATED=1
  fi
}

installed_version() {
  { dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null || true; } |
    awk -F'|' '$1 ~ /^ii/ { print $2 }'
}

install_apt_packages() {
  local missing=() spec name version current
  step "apt packages" "check the pins in APT_PACKAGES against \`apt-cache policy NAME\`"
  for spec in "${APT_PACKAGES[@]}"; do
    name="${spec%%=*}"
    version="${spec#*=}"
    current="$(installed_version "$name")"
    if [[ "$current" == "$version" ]]; then
      say "$name $version: present"
    else
      missing+=("$spec")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0

  apt_update_once
  for spec in "${missing[@]}"; do
    name="${spec%%=*}"
    version="${spec#*=}"
    if ! apt-cache madison "$name" | awk -F' [|] ' '{ print $2 }' | grep -qxF "$version"; then
      local candidate
      candidate="$(apt-cache policy "$name" | awk '/Candidate:/ { print $2 }')"
      FIX="set $name to the available version (candidate: ${candidate:-none}) in APT_PACKAGES"
      fail "$name $version is not available from the configured apt sources"
    fi
  done
  quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    --allow-downgrades "${missing[@]}"
  for spec in "${missing[@]}"; do
    say "${spec%%=*} ${spec#*=}: installed"
  done
}

# --- binfmt_misc for linux/arm64 ---------------------------------------------------------------

register_binfmt_aarch64() {
  step "binfmt_misc mount" "mount -t binfmt_misc binfmt_misc $BINFMT_DIR (needs a privileged host)"
  if mountpoint -q "$BINFMT_DIR"; then
    say "binfmt_misc mount: present"
  else
    quiet mount -t binfmt_misc binfmt_misc "$BINFMT_DIR"
    say "binfmt_misc mount: installed"
  fi

  step "binfmt qemu-aarch64" "check $QEMU_AARCH64_CONF (package qemu-user-static)"
  if [[ -e "$BINFMT_DIR/qemu-aarch64" ]]; then
    grep -q '^flags:.*F' "$BINFMT_DIR/qemu-aarch64" ||
      say "binfmt qemu-aarch64: warning: registered without the F flag, so RUN steps in" \
        "arm64 containers may fail; remove it with 'echo -1 > $BINFMT_DIR/qemu-aarch64'" \
        "and rerun"
    say "binfmt qemu-aarch64: present"
    return 0
  fi
  [[ -r "$QEMU_AARCH64_CONF" ]] || fail "$QEMU_AARCH64_CONF is missing"
  # The line is :name:type:offset:magic:mask:interpreter:flags. The F flag opens the interpreter
  # at registration, so it also runs inside containers whose root lacks /usr/libexec/qemu-binfmt.
  local line flags
  line="$(grep -v '^[[:space:]]*#' "$QEMU_AARCH64_CONF" | grep -m1 ':qemu-aarch64:')" ||
    fail "no qemu-aarch64 line in $QEMU_AARCH64_CONF"
  flags="${line##*:}"
  [[ "$flags" == *F* ]] || line="${line}F"
  printf '%s' "$line" >"$BINFMT_DIR/register"
  say "binfmt qemu-aarch64: installed"
}

# --- Root filesystems --------------------------------------------------------------------------

# Builds ROOT from a busybox binary: bin/busybox, applet links, and empty etc/, tmp/, root/.
make_rootfs() {
  local busybox="$1" root="$2" applet
  rm -rf "$root.tmp"
  mkdir -p "$root.tmp/bin" "$root.tmp/etc" "$root.tmp/root" "$root.tmp/tmp"
  chmod 1777 "$root.tmp/tmp"
  chmod 0700 "$root.tmp/root"
  install -m 0755 "$busybox" "$root.tmp/bin/busybox"
  for applet in "${BUSYBOX_APPLETS[@]}"; do
    ln -s busybox "$root.tmp/bin/$applet"
  done
  rm -rf "$root"
  mv "$root.tmp" "$root"
}

prepare_rootfs_amd64() {
  local root="$ROOTFS_DIR/amd64" stamp="$ROOTFS_DIR/amd64.version" version
  version="$(printf '%s\n' "${APT_PACKAGES[@]}" | awk -F= '$1 == "busybox-static" { print $2 }')"
  step "rootfs amd64" "check that busybox-static is installed at /bin/busybox"
  if [[ -x "$root/bin/busybox" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
    say "rootfs amd64 (busybox $version): present at $root"
    return 0
  fi
  mkdir -p "$ROOTFS_DIR"
  make_rootfs /bin/busybox "$root"
  printf '%s\n' "$version" >"$stamp"
  say "rootfs amd64 (busybox $version): installed at $root"
}

prepare_rootfs_arm64() {
  local root="$ROOTFS_DIR/arm64" stamp="$ROOTFS_DIR/arm64.version"
  local version="$BUSYBOX_ARM64_VERSION"
  step "rootfs arm64" "check that apt can download busybox-static:arm64=$version"
  if [[ -x "$root/bin/busybox" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
    say "rootfs arm64 (busybox $version): present at $root"
    return 0
  fi
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    quiet dpkg --add-architecture arm64
    APT_UPDATED=0
  fi
  apt_update_once
  local debs="$CACHE_DIR/debs" unpacked
  mkdir -p "$debs"
  rm -f "$debs"/busybox-static_*_arm64.deb
  (cd "$debs" && quiet apt-get download "busybox-static:arm64=$version")
  unpacked="$(mktemp -d)"
  quiet dpkg-deb -x "$debs"/busybox-static_*_arm64.deb "$unpacked"
  make_rootfs "$unpacked/bin/busybox" "$root"
  rm -rf "$unpacked"
  printf '%s\n' "$version" >"$stamp"
  say "rootfs arm64 (busybox $version): installed at $root"
}

verify_arm64_emulation() {
  step "arm64 emulation" "check the binfmt qemu-aarch64 entry and package qemu-user-static"
  local machine
  machine="$("$ROOTFS_DIR/arm64/bin/busybox" uname -m 2>>"$LOG_FILE")" ||
    fail "the arm64 busybox does not run, so linux/arm64 builds will fail"
  [[ "$machine" == aarch64 ]] || fail "the arm64 busybox reports machine '$machine'"
  say "arm64 emulation: works (busybox uname -m: $machine)"
}

# --- Go tools ----------------------------------------------------------------------------------

# Succeeds when BINARY reports VERSION through `--version` (or `version`, as buildx has it).
binary_has_version() {
  local binary="$1" version="${2#v}" output
  [[ -x "$binary" ]] || return 1
  output="$("$binary" --version 2>/dev/null || "$binary" version 2>/dev/null || true)"
  grep -Eq "(^|[^0-9.])v?${version//./\\.}([^0-9.]|$)" <<<"$output"
}

binary_name() {
  local package="$1" name
  if [[ -v "GO_BINARY_NAME[$package]" ]]; then
    printf '%s\n' "${GO_BINARY_NAME[$package]}"
    return 0
  fi
  name="$(basename "$package")"
  [[ "$name" =~ ^v[0-9]+$ ]] && name="$(basename "$(dirname "$package")")"
  printf '%s\n' "$name"
}

build_go_tool() {
  local dir="$1"
  step "go tool $(basename "$dir")" "run 'GOTOOLCHAIN=local go build' in $dir and read its error"
  export GOTOOLCHAIN=local

  local packages module version variable
  packages="$(cd "$dir" && go list tool 2>>"$LOG_FILE")" ||
    fail "cannot list the tool packages of $dir"
  [[ -n "$packages" ]] || fail "$dir/go.mod has no tool directive"
  module="$(cd "$dir" && go list -f '{{.Module.Path}}' tool | sort -u)"
  [[ "$module" != *$'\n'* ]] || fail "the tools of $dir come from more than one module"
  version="$(cd "$dir" && go list -m -f '{{.Version}}' "$module")"
  if [[ ! -v "GO_VERSION_VARIABLE[$module]" ]]; then
    FIX="add the version variable of $module to GO_VERSION_VARIABLE in scripts/setup.sh"
    fail "no version variable known for $module"
  fi
  variable="${GO_VERSION_VARIABLE[$module]}"
  local ldflags="-s -w"
  [[ -z "$variable" ]] || ldflags+=" -X $variable=$version"

  local package binary binaries=() stale=0
  for package in $packages; do
    binaries+=("$(binary_name "$package")")
  done
  for binary in "${binaries[@]}"; do
    binary_has_version "$BIN_DIR/$binary" "$version" || stale=1
  done
  if [[ "$stale" == 0 ]]; then
    say "${binaries[*]} $version: present"
    return 0
  fi

  local out
  out="$(mktemp -d)"
  for package in $packages; do
    (cd "$dir" && quiet go build -trimpath -ldflags "$ldflags" \
      -o "$out/$(binary_name "$package")" "$package")
  done
  for binary in "${binaries[@]}"; do
    install -m 0755 "$out/$binary" "$BIN_DIR/$binary"
    binary_has_version "$BIN_DIR/$binary" "$version" ||
      fail "$BIN_DIR/$binary does not report version $version after the build"
  done
  rm -rf "$out"
  say "${binaries[*]} $version: installed in $BIN_DIR"
}

install_docker_buildx_plugin() {
  step "docker buildx plugin" "check that $BIN_DIR/buildx exists (tools/go/buildx)"
  local plugin="$DOCKER_PLUGIN_DIR/docker-buildx"
  if [[ -x "$plugin" ]] && cmp -s "$BIN_DIR/buildx" "$plugin"; then
    say "docker buildx plugin: present at $plugin"
    return 0
  fi
  mkdir -p "$DOCKER_PLUGIN_DIR"
  install -m 0755 "$BIN_DIR/buildx" "$plugin"
  say "docker buildx plugin: installed at $plugin"
}

# --- OCI conformance suite ---------------------------------------------------------------------

# The OCI distribution-spec conformance suite, which crates/drydock/tests/registry_conformance.rs
# runs against a real server. Its version is pinned by tools/go-test/conformance/go.mod. It is a
# test binary (`go test -c`) rather than a tool, so it lives outside tools/go/.
CONFORMANCE_DIR="$REPO_DIR/tools/go-test/conformance"
CONFORMANCE_PACKAGE="github.com/opencontainers/distribution-spec/conformance"
CONFORMANCE_BIN="$BIN_DIR/oci-conformance.test"

build_conformance_suite() {
  step "oci conformance suite" \
    "run 'GOTOOLCHAIN=local go test -c $CONFORMANCE_PACKAGE' in $CONFORMANCE_DIR and read its error"
  export GOTOOLCHAIN=local

  local version built
  version="$(cd "$CONFORMANCE_DIR" && go list -m -f '{{.Version}}' "$CONFORMANCE_PACKAGE" \
    2>>"$LOG_FILE")" || fail "cannot read the pinned version from $CONFORMANCE_DIR/go.mod"
  # Go records the module version in the binary, so `go version -m` shows what it was built from.
  built="$(go version -m "$CONFORMANCE_BIN" 2>/dev/null |
    awk -v module="$CONFORMANCE_PACKAGE" '$1 == "mod" && $2 == module { print $3 }')" || true
  if [[ -x "$CONFORMANCE_BIN" && "$built" == "$version" ]]; then
    say "oci-conformance.test $version: present"
    return 0
  fi

  local out
  out="$(mktemp -d)"
  # The suite prints its Version variable as the commit it tested with.
  (cd "$CONFORMANCE_DIR" && quiet go test -c -trimpath \
    -ldflags "-s -w -X $CONFORMANCE_PACKAGE.Version=$version" \
    -o "$out/oci-conformance.test" "$CONFORMANCE_PACKAGE")
  install -m 0755 "$out/oci-conformance.test" "$CONFORMANCE_BIN"
  rm -rf "$out"
  say "oci-conformance.test $version: installed in $BIN_DIR"
}

# --- Main --------------------------------------------------------------------------------------

check_machine
install_apt_packages
register_binfmt_aarch64
prepare_rootfs_amd64
prepare_rootfs_arm64
verify_arm64_emulation
for tool_dir in "$REPO_DIR"/tools/go/*/; do
  [[ -f "$tool_dir/go.mod" ]] || continue
  build_go_tool "${tool_dir%/}"
done
install_docker_buildx_plugin
build_conformance_suite
rm -f "$LOG_FILE"
say "done; root filesystems are in $ROOTFS_DIR/{amd64,arm64}"
