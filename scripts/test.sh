#!/usr/bin/env bash
# Runs every test: go vet, then the unit and integration tests with -race,
# among them the end-to-end test of the lab (deploy/lab: swtpm, containerd,
# Mosquitto, the provisioner, the runtime stand-in and the relay image).
# Run as root, it first installs the test peers that are missing (swtpm,
# swtpm-tools, tpm2-tools, containerd, runc, Docker's engine, Mosquitto,
# Node.js and npm, lintian and man-db) with apt; otherwise tests that need a missing peer are skipped,
# except under CI, where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v swtpm >/dev/null || missing+=(swtpm)
command -v swtpm_setup >/dev/null || missing+=(swtpm-tools)
command -v tpm2_readpublic >/dev/null || missing+=(tpm2-tools)
command -v openssl >/dev/null || missing+=(openssl)
command -v gcc >/dev/null || missing+=(gcc) # cgo: the in-process reference TPM and -race
[[ -e /usr/include/openssl/evp.h ]] || missing+=(libssl-dev) # the reference TPM links libcrypto
# Image side-load and runtime health against real daemons, each test
# starting its own in a temp folder: containerd 1.6 runs containers with
# runc; dockerd 20.10 keeps images in its classic store.
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
command -v dockerd >/dev/null || missing+=(docker.io)
# Local MQTT producers publish to a real Mosquitto, one per test.
command -v mosquitto >/dev/null || missing+=(mosquitto)
# Azure's Node.js DPS clients against the DPS emulator; the service client
# reaches the lab at its host name, so that test writes the lab's lines into
# /etc/hosts (restored after it) and binds port 443: root.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# The .deb packages: lintian checks them; systemd-analyze verify, on the
# installed units, looks up their man: documentation with man.
command -v lintian >/dev/null || missing+=(lintian)
command -v man >/dev/null || missing+=(man-db)

if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]]; then
    echo "test.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test.sh: not root, so not installing ${missing[*]}; tests that need them will skip" >&2
  fi
fi

export CGO_ENABLED=1
go vet ./...
go test -race -count=1 -timeout=30m "$@" ./...

# Again against containerd 1.7, the API of the daemons Docker ships today
# (Debian 12's is 1.6), built once from the Go module proxy into the cache.
ctd17_version=v1.7.35
ctd17="${XDG_CACHE_HOME:-$HOME/.cache}/edgetpm/containerd-$ctd17_version/containerd"
if [[ ! -x $ctd17 ]] && command -v containerd >/dev/null; then
  echo "test.sh: building containerd $ctd17_version" >&2
  tmp=$(mktemp -d)
  printf 'module build\ngo 1.26\nrequire github.com/containerd/containerd %s\n' "$ctd17_version" >"$tmp/go.mod"
  printf '//go:build tools\npackage tools\nimport _ "github.com/containerd/containerd/cmd/containerd"\n' >"$tmp/tools.go"
  (cd "$tmp" && go mod tidy && CGO_ENABLED=0 go build -trimpath -tags no_btrfs,no_devmapper,no_zfs,no_aufs -o "$ctd17" github.com/containerd/containerd/cmd/containerd)
  rm -rf "$tmp"
fi
if [[ -x $ctd17 ]]; then
  EDGE_TEST_CONTAINERD=$ctd17 go test -race -count=1 "$@" ./provisioner/containerd/... ./provisioner ./deploy/lab
fi
