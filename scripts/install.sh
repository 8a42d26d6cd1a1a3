#!/usr/bin/env bash
# Installs edge-provisioner on a device: the binary in /usr/local/bin, an
# example /etc/edge-provisioner/config.toml (an existing one is kept), the
# state folder and a systemd unit that provisions at boot, before the
# aziot services start.
#
#   sudo scripts/install.sh [--binary FILE] [--prefix DIR] [--no-enable]
#
# Without --binary it builds one with Go from this checkout. --prefix
# installs under DIR instead of / (for packaging and for tests).
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" prefix="" enable=1
while (($#)); do
  case $1 in
    --binary) binary=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --no-enable) enable=0; shift ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [[ -z $prefix && $(id -u) != 0 ]]; then
  echo "install.sh: run as root (sudo), or give --prefix" >&2
  exit 1
fi

if [[ -z $binary ]]; then
  binary=$(mktemp -d)/edge-provisioner
  echo "install.sh: building $binary" >&2
  CGO_ENABLED=0 go build -trimpath -o "$binary" ./provisioner
fi

install -D -m 0755 "$binary" "$prefix/usr/local/bin/edge-provisioner"
install -d -m 0755 "$prefix/etc/edge-provisioner"
if [[ -e $prefix/etc/edge-provisioner/config.toml ]]; then
  echo "install.sh: keeping $prefix/etc/edge-provisioner/config.toml" >&2
else
  install -m 0640 manifests/provisioner.toml "$prefix/etc/edge-provisioner/config.toml"
fi
install -d -m 0700 "$prefix/var/lib/edge-provisioner"
install -D -m 0644 scripts/systemd/edge-provisioner.service "$prefix/etc/systemd/system/edge-provisioner.service"

if [[ -z $prefix && $enable == 1 ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable edge-provisioner.service
fi

cat >&2 <<MSG
install.sh: installed. Next:
  1. edge-provisioner identity      # the registration ID and EK to enroll in DPS
  2. set dps.id_scope in /etc/edge-provisioner/config.toml
  3. edge-provisioner doctor        # every check with a remedy
  4. edge-provisioner provision     # or reboot: the unit runs it before IoT Edge starts
MSG
