#!/usr/bin/env bash
# Two Linux guests (the test guest of scripts/build-guest.sh) on one vrouter bridge: vm1
# pings vm2, then vrouter prints its counters (SIGUSR1) and stops.
set -euo pipefail
cd "$(dirname "$0")/../.."
GUEST=${VROUTER_CACHE:-$HOME/.cache/vrouter}/guest
bash scripts/build-guest.sh > /dev/null
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2> /dev/null || true; rm -rf "$WORK"' EXIT

. examples/lib.sh
start_vrouter examples/two-guests/vrouter.json

# QEMU 7.2 under TCG needs vectors=0 with vhost-user (its MSI-X path crashes without KVM).
guest() { # NAME SOCKET IP SCRIPT (run it in a subshell: it becomes QEMU)
  echo "$4" > "$WORK/$1.sh"
  exec qemu-system-x86_64 -name "$1" -machine pc,accel=tcg,memory-backend=mem0 -cpu max -m 256M \
    -object memory-backend-memfd,id=mem0,size=256M,share=on \
    -nodefaults -no-user-config -display none -vga none -no-reboot -serial "file:$WORK/$1.console" \
    -kernel "$GUEST/kernel" -initrd "$GUEST/initrd.img" -fw_cfg "name=opt/vrouter/cmd,file=$WORK/$1.sh" \
    -chardev "socket,id=vhu0,path=$2" -netdev vhost-user,id=net0,chardev=vhu0 \
    -device "virtio-net-pci,netdev=net0,vectors=0,mac=52:54:$(echo "${3%/*}" | awk -F. '{printf "%02x:%02x:%02x:%02x", $1, $2, $3, $4}')" \
    -append "console=ttyS0 panic=-1 quiet vr.name=$1 vr.timeout=60 vr.ip0=$3"
}
guest vm2 /tmp/vrouter-example/vm2.sock 10.0.0.2/24 'vr_wait_peer 10.0.0.1 60; sleep 15' &
VM2=$!
(guest vm1 /tmp/vrouter-example/vm1.sock 10.0.0.1/24 'vr_wait_peer 10.0.0.2 60 && vr_ping 10.0.0.2 5')
grep -h '^VR-RESULT' "$WORK/vm1.console" || { echo "vm1 reported nothing:"; cat "$WORK/vm1.console"; }

kill -USR1 $VROUTER
sleep 0.5
grep -o 'vrouter: stats .*' "$WORK/vrouter.log"
kill $VM2; wait $VM2 || true # the guests go first: QEMU complains when its backend vanishes
kill -TERM $VROUTER
wait $VROUTER || true
