#!/usr/bin/env bash
# Installs edgetpm on a device, from what was downloaded:
#
#   sudo scripts/install.sh FILE.deb...     the packages (edge-provisioner,
#                                           edge-relay), with apt, which also
#                                           installs what they depend on
#   sudo scripts/install.sh --binary FILE [--prefix DIR] [--no-enable]
#                                           a built edge-provisioner, for
#                                           hosts without dpkg: the binary in
#                                           /usr/local/bin, an example
#                                           /etc/edge-provisioner/config.toml
#                                           (an existing one is kept), the
#                                           state folder and the unit
#   sudo scripts/install.sh --from-source [--prefix DIR] [--no-enable]
#                                           developers: build edge-provisioner
#                                           with Go from this checkout, then
#                                           as --binary
#
# --prefix installs under DIR instead of / (for tests). Packages are built
# with 'go run ./deploy package' (docs/device-install.md).
set -euo pipefail
# The repository holds the example settings and the unit; paths given as
# arguments are the operator's, relative to where the script is run.
repo=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  echo "usage: install.sh FILE.deb... | --binary FILE | --from-source  [--prefix DIR] [--no-enable]" >&2
  exit 2
}

binary="" prefix="" enable=1 source=0 debs=()
while (($#)); do
  case $1 in
    --binary) (($# > 1)) || usage; binary=$(realpath "$2"); shift 2 ;;
    --prefix) (($# > 1)) || usage; prefix=$(realpath -m "$2"); shift 2 ;;
    --no-enable) enable=0; shift ;;
    --from-source) source=1; shift ;;
    *.deb) debs+=("$(realpath "$1")"); shift ;;
    *) echo "install.sh: unknown argument $1" >&2; usage ;;
  esac
done
modes=0
((${#debs[@]})) && modes=$((modes + 1))
[[ -n $binary ]] && modes=$((modes + 1))
((source)) && modes=$((modes + 1))
if ((modes != 1)); then
  echo "install.sh: give packages, --binary FILE or --from-source: one of them" >&2
  usage
fi

if ((${#debs[@]} && !enable)); then
  echo "install.sh: packages never enable their units; --no-enable is for --binary and --from-source" >&2
  exit 2
fi

if [[ -z $prefix && $(id -u) != 0 ]]; then
  echo "install.sh: run as root (sudo), or give --prefix" >&2
  exit 1
fi

if ((${#debs[@]})); then
  [[ -z $prefix ]] || { echo "install.sh: packages install under /, not --prefix" >&2; exit 2; }
  if command -v apt-get >/dev/null; then
    apt-get install -y "${debs[@]}"
  else
    dpkg --install "${debs[@]}"
  fi
  cat >&2 <<MSG
install.sh: installed. Next (docs/device-install.md, first boot):
  1. edge-provisioner identity      # the registration ID and EK to enroll in DPS
  2. set dps.id_scope in /etc/edge-provisioner/config.toml
  3. edge-provisioner doctor        # every check with a remedy
  4. systemctl enable edge-provisioner.service && edge-provisioner provision
MSG
  exit 0
fi

if ((source)); then
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  binary=$build/edge-provisioner
  echo "install.sh: building edge-provisioner" >&2
  (cd "$repo" && CGO_ENABLED=0 go build -trimpath -o "$binary" ./provisioner)
fi

install -D -m 0755 "$binary" "$prefix/usr/local/bin/edge-provisioner"
install -d -m 0755 "$prefix/etc/edge-provisioner"
if [[ -e $prefix/etc/edge-provisioner/config.toml ]]; then
  echo "install.sh: keeping $prefix/etc/edge-provisioner/config.toml" >&2
else
  install -m 0644 "$repo/manifests/provisioner.toml" "$prefix/etc/edge-provisioner/config.toml"
fi
install -d -m 0700 "$prefix/var/lib/edge-provisioner"
# The packaged unit runs /usr/bin/edge-provisioner; this one is local.
install -d -m 0755 "$prefix/etc/systemd/system"
sed 's#/usr/bin/edge-provisioner#/usr/local/bin/edge-provisioner#' "$repo/scripts/systemd/edge-provisioner.service" \
  >"$prefix/etc/systemd/system/edge-provisioner.service"
chmod 0644 "$prefix/etc/systemd/system/edge-provisioner.service"

if [[ -z $prefix && $enable == 1 ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable edge-provisioner.service
fi

if [[ -z $prefix ]]; then
  cat >&2 <<MSG
install.sh: installed. Next:
  1. edge-provisioner identity      # the registration ID and EK to enroll in DPS
  2. set dps.id_scope in /etc/edge-provisioner/config.toml
  3. edge-provisioner doctor        # every check with a remedy
  4. edge-provisioner provision     # or reboot: the unit runs it before IoT Edge starts
MSG
else
  # Under a prefix nothing is on PATH or at the default settings path, and
  # the unit is not enabled: the steps name what was installed.
  bin=$prefix/usr/local/bin/edge-provisioner conf=$prefix/etc/edge-provisioner/config.toml
  cat >&2 <<MSG
install.sh: installed under $prefix. Next:
  1. $bin identity --config $conf
                                    # the registration ID and EK to enroll in DPS
  2. set dps.id_scope in $conf
  3. $bin doctor --config $conf
                                    # every check with a remedy
  4. $bin provision --config $conf
                                    # the unit, $prefix/etc/systemd/system/edge-provisioner.service, is not enabled
MSG
fi
