#!/usr/bin/env bash
# Four Linux guests (the test guest of scripts/build-guest.sh) on three subnets routed by
# vrouter: vm-a on port a (10.0.1.0/24, 2001:db8:1::/64), vm-b on port b (10.0.2.0/24,
# 2001:db8:2::/64, MTU 9000), vm-c and vm-d in bridge br0 (10.0.3.0/24), where the router
# has 10.0.3.1. vm-a pings and traceroutes the others over IPv4 and IPv6 (its IPv6 default
# route comes from the router's advertisements), vm-b sends packets too big for port a;
# then vrouter prints its counters (SIGUSR1) and stops.
set -euo pipefail
cd "$(dirname "$0")/../.."
GUEST=${VROUTER_CACHE:-$HOME/.cache/vrouter}/guest
bash scripts/build-guest.sh > /dev/null
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2> /dev/null || true; rm -rf "$WORK"' EXIT

. examples/lib.sh
start_vrouter examples/three-subnets/vrouter.json

# QEMU 7.2 under TCG needs vectors=0 with vhost-user (its MSI-X path crashes without KVM).
guest() { # NAME SOCKET IP/P MTU SCRIPT (run it in a subshell: it becomes QEMU)
  echo "$5" > "$WORK/$1.sh"
  exec qemu-system-x86_64 -name "$1" -machine pc,accel=tcg,memory-backend=mem0 -cpu max -m 256M \
    -object memory-backend-memfd,id=mem0,size=256M,share=on \
    -nodefaults -no-user-config -display none -vga none -no-reboot -serial "file:$WORK/$1.console" \
    -kernel "$GUEST/kernel" -initrd "$GUEST/initrd.img" -fw_cfg "name=opt/vrouter/cmd,file=$WORK/$1.sh" \
    -chardev "socket,id=vhu0,path=$2" -netdev vhost-user,id=net0,chardev=vhu0 \
    -device "virtio-net-pci,netdev=net0,vectors=0,host_mtu=$4,mac=52:54:$(echo "${3%/*}" | awk -F. '{printf "%02x:%02x:%02x:%02x", $1, $2, $3, $4}')" \
    -append "console=ttyS0 panic=-1 quiet vr.name=$1 vr.timeout=90 vr.ip0=$3 vr.mtu0=$4"
}
S=/tmp/vrouter-three-subnets
# The guests other than vm-a answer, then stay up until this script stops them.
guest vm-b $S/b.sock 10.0.2.2/24 9000 'ip route add default via 10.0.2.1; ip addr add 192.0.2.1/32 dev lo
  ip -6 addr add 2001:db8:2::2/64 dev eth0; vr_wait_peer 10.0.1.2 60
  vr_ping 10.0.1.2 3 8000; ping -c 3 -s 8000 2001:db8:1::2 > /dev/null; sleep 60' &
OTHERS=$!
guest vm-c $S/c.sock 10.0.3.2/24 1500 'ip route add default via 10.0.3.1; vr_wait_peer 10.0.3.3 60; sleep 60' &
OTHERS="$OTHERS $!"
guest vm-d $S/d.sock 10.0.3.3/24 1500 'ip route add default via 10.0.3.1; vr_wait_peer 10.0.3.2 60; sleep 60' &
OTHERS="$OTHERS $!"
(guest vm-a $S/a.sock 10.0.1.2/24 1500 'ip route add default via 10.0.1.1; ip -6 addr add 2001:db8:1::2/64 dev eth0
  vr_wait_peer 10.0.2.2 60 && vr_ping 10.0.2.2 5; vr_ping 10.0.3.2 5; vr_ping 10.0.3.3 5; vr_ping 192.0.2.1 3
  for i in $(seq 35); do ip -6 route | grep -q "^default" && break; sleep 1; done; ip -6 route
  vr_wait_peer 2001:db8:2::2 30 && vr_ping 2001:db8:2::2 5
  traceroute -n -q 1 -m 4 10.0.2.2; traceroute6 -n -q 1 -m 4 2001:db8:2::2; traceroute -n -q 1 -m 4 198.51.100.1')
sed -n '/^VR-READY/,/^VR-EXIT/p' "$WORK/vm-a.console" | grep -v '^VR-READY' || { echo "vm-a reported nothing:"; cat "$WORK/vm-a.console"; }
grep -h '^VR-RESULT' "$WORK/vm-b.console" || true

kill -USR1 $VROUTER
sleep 0.5
grep -o 'vrouter: stats .*' "$WORK/vrouter.log"
kill $OTHERS; wait $OTHERS || true # the guests go first: QEMU complains when its backend vanishes
kill -TERM $VROUTER
wait $VROUTER || true
