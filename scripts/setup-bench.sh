#!/bin/sh
# setup-bench.sh - what npm run bench needs beyond the test peers: OVS-DPDK (Debian's
# openvswitch-switch-dpdk), the switch operators would otherwise run, measured in the same
# run as vrouter. Installed with apt-get when missing; returns at once when it is there.
set -eu
[ -x /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk ] && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo > /dev/null || { echo "setup-bench: need root or sudo to install openvswitch-switch-dpdk" >&2; exit 1; }
  SUDO=sudo
fi
echo "setup-bench: installing openvswitch-switch-dpdk" >&2
install="env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 openvswitch-switch-dpdk"
$SUDO $install >&2 || { $SUDO apt-get update -q >&2 && $SUDO $install >&2; }
