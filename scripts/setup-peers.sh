#!/bin/sh
# setup-peers.sh - the peers of the end-to-end tests: QEMU, dpdk-testpmd, busybox and iperf3
# (the guest's own tools, on the host too to try things out), tshark (Wireshark's dissectors
# check the frames the tests build), promtool (Prometheus' own check of /metrics), ethtool
# (the offloads of the veth ends the uplink tests make), iproute2 (their namespaces), procps
# (sysctl, a BGP test's veths), FRR
# (zebra and bgpd, BGP peers in namespaces: test/support/frr.ts), Python 3 (the raw frames
# test/support/inject-frames.py sends into uplinks), bindfs (a FUSE file system whose daemon a
# hostile-input test stops: test/hostile/fuse-files.test.ts), and what
# build-guest.sh needs
# to make the test guest from Debian packages; installed with apt-get when missing. Then the
# guest itself (scripts/build-guest.sh). Returns at once when everything is in place.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)

# command (or file) that shows a package is installed -> the Debian package that provides it
NEEDS="qemu-system-x86_64:qemu-system-x86 dpdk-testpmd:dpdk-dev /bin/busybox:busybox-static
iperf3:iperf3 tshark:tshark promtool:prometheus ethtool:ethtool ip:iproute2 /usr/lib/frr/bgpd:frr vtysh:frr /usr/bin/python3:python3 apt-get:apt dpkg-deb:dpkg flock:util-linux prlimit:util-linux sysctl:procps cpio:cpio xz:xz-utils zstd:zstd gzip:gzip bindfs:bindfs"
missing=""
for need in $NEEDS; do
  what=${need%%:*} pkg=${need#*:}
  case $what in
    /*) [ -e "$what" ] ;;
    *) command -v "$what" > /dev/null ;;
  esac || missing="$missing $pkg"
done

# shellcheck disable=SC2086
sh "$HERE/apt-install.sh" $missing

# Under systemd these packages also enable their services for the next boot: a zebra of
# the host's own would hold the default namespace's routes, and Prometheus would listen on
# :9090 of every interface. The tests start their own FRR and need only promtool.
for service in frr prometheus; do
  if [ -d /run/systemd/system ] && systemctl is-enabled --quiet "$service" 2> /dev/null; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO systemctl disable --now "$service"
  fi
done

bash "$HERE/build-guest.sh"
