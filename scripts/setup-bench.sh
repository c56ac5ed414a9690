#!/bin/sh
# setup-bench.sh - what npm run bench needs beyond the test peers: OVS-DPDK (Debian's
# openvswitch-switch-dpdk), the switch operators would otherwise run, measured in the same
# run as vrouter. Installed when missing; returns at once when it is there.
set -eu
[ -x /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk ] && exit 0
sh "$(dirname "$0")/apt-install.sh" openvswitch-switch-dpdk
