#!/usr/bin/env bash
# dpdk-testpmd with two virtio-user ports (no hugepages) sends 64-byte frames through
# vrouter both ways for SECONDS (default 5): testpmd's forwarding core on CPU 0, vrouter's
# PMD on CPU 1 (two pollers on one CPU collapse to kilo-packets). Prints both sides' counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_TO_RUN=${1:-5}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2> /dev/null || true; rm -rf "$WORK" /var/run/dpdk/vrouter-example' EXIT

. examples/lib.sh
start_vrouter examples/testpmd/vrouter.json

# -i with commands on stdin: start, wait, stop, print the port statistics, quit.
{ sleep 3; echo start; sleep "$SECONDS_TO_RUN"; echo stop; sleep 1; echo 'show port stats all'; sleep 1; echo quit; } |
  dpdk-testpmd --no-huge -m 256 --no-pci --file-prefix vrouter-example --lcores 0@1,1@0 \
    --vdev net_virtio_user0,path=/tmp/vrouter-testpmd/a.sock,mac=02:00:00:00:00:0a \
    --vdev net_virtio_user1,path=/tmp/vrouter-testpmd/b.sock,mac=02:00:00:00:00:0b \
    -- -i --total-num-mbufs=16384 --forward-mode=flowgen --txpkts=64 \
    --eth-peer=0,02:00:00:00:00:0b --eth-peer=1,02:00:00:00:00:0a 2>&1 |
  grep -E 'NIC statistics|RX-packets|TX-packets'

kill -USR1 $VROUTER
sleep 0.5
grep -o 'vrouter: stats .*' "$WORK/vrouter.log"
kill -TERM $VROUTER
wait $VROUTER || true
