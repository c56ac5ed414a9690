#!/bin/sh
# setup-peers.sh - the peers of the end-to-end tests: QEMU, dpdk-testpmd, busybox and iperf3
# (the guest's own tools, on the host too to try things out), and what build-guest.sh needs
# to make the test guest from Debian packages; installed with apt-get when missing. Then the
# guest itself (scripts/build-guest.sh). Returns at once when everything is in place.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)

# command (or file) that shows a package is installed -> the Debian package that provides it
NEEDS="qemu-system-x86_64:qemu-system-x86 dpdk-testpmd:dpdk-dev /bin/busybox:busybox-static
iperf3:iperf3 apt-get:apt dpkg-deb:dpkg flock:util-linux cpio:cpio xz:xz-utils zstd:zstd gzip:gzip"
missing=""
for need in $NEEDS; do
  what=${need%%:*} pkg=${need#*:}
  case $what in
    /*) [ -e "$what" ] ;;
    *) command -v "$what" > /dev/null ;;
  esac || missing="$missing $pkg"
done

if [ -n "$missing" ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo > /dev/null || { echo "setup-peers: need root or sudo to install:$missing" >&2; exit 1; }
    SUDO=sudo
  fi
  echo "setup-peers: installing$missing" >&2
  # env: sudo drops the caller's environment. Lock::Timeout: wait for another apt run.
  install="env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300"
  # shellcheck disable=SC2086
  $SUDO $install $missing >&2 || { $SUDO apt-get update -q >&2 && $SUDO $install $missing >&2; }
fi

bash "$HERE/build-guest.sh"
