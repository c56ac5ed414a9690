#!/usr/bin/env bash
# build-guest.sh [CACHE] - the Linux guest the end-to-end tests boot under QEMU, built from
# Debian packages only: the distro kernel with its virtio modules, busybox as userland,
# iperf3. Output: CACHE/guest/{kernel,initrd.img}; CACHE defaults to $VROUTER_CACHE or
# ~/.cache/vrouter. Idempotent: with the packages cached and this script unchanged it
# returns at once, without network.
#
# The guest's /init reads its set-up from the kernel command line (vr.name=, vr.ip0=A/P,
# vr.mtu0=, vr.q0= for eth0, and so on), runs the script QEMU passes as the fw_cfg file
# opt/vrouter/cmd with the helpers of /vr/lib.sh, prints "VR-..." lines on the serial
# console and powers off.
set -euo pipefail

CACHE=${1:-${VROUTER_CACHE:-$HOME/.cache/vrouter}}
DEBS=$CACHE/debs
OUT=$CACHE/guest
mkdir -p "$DEBS" "$OUT"
exec 9> "$CACHE/.build.lock"
flock -w 600 9 || { echo "build-guest: $CACHE is locked by another build" >&2; exit 1; }

log() { echo "build-guest: $*" >&2; }
# Package lists are root's to refresh.
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
USERLAND=(busybox-static iperf3 libiperf0 libsctp1 libssl3 libc6 ethtool libmnl0)
MODULES=(virtio_pci virtio_net qemu_fw_cfg 8021q)

deb_of() { ls "$DEBS/$1"_*.deb 2>/dev/null | head -n1 || true; }
download() {
  [ -n "$(deb_of "$1")" ] && return 0
  log "downloading $1"
  (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$1" >&2) \
    || { $SUDO apt-get update -qq >&2 && (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$1" >&2); }
}

KERNEL_PKG=$(ls "$DEBS"/linux-image-[0-9]*-amd64_*.deb 2>/dev/null | head -n1 | xargs -r basename | cut -d_ -f1 || true)
if [ -z "$KERNEL_PKG" ]; then
  KERNEL_PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' || true)
  [ -n "$KERNEL_PKG" ] || { $SUDO apt-get update -qq >&2; KERNEL_PKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
fi
for p in "$KERNEL_PKG" "${USERLAND[@]}"; do download "$p"; done

STAMP=$( { sha256sum < "$0"; for p in "$KERNEL_PKG" "${USERLAND[@]}"; do basename "$(deb_of "$p")"; done; } | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ] && [ -s "$OUT/kernel" ] && [ -s "$OUT/initrd.img" ]; then
  exit 0
fi
log "building the guest image in $OUT"

WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
for p in "${USERLAND[@]}"; do dpkg -x "$(deb_of "$p")" "$WORK/pkgs"; done
dpkg -x "$(deb_of "$KERNEL_PKG")" "$WORK/kernel"
VMLINUZ=$(ls "$WORK"/kernel/boot/vmlinuz-* | head -n1)
KVER=${VMLINUZ##*/vmlinuz-}
MODDIR=$(ls -d "$WORK"/kernel/lib/modules/"$KVER" "$WORK"/kernel/usr/lib/modules/"$KVER" 2>/dev/null | head -n1 || true)

# The uncompressed kernel boots through its PVH entry point, skipping ~3 s of in-guest
# decompression under TCG; if no payload unpacks to an ELF, the bzImage is used.
unpack_vmlinux() {
  local magic tool off
  for pair in $'\xfd7zXZ:xz' $'\x28\xb5\x2f\xfd:zstd' $'\x1f\x8b\x08:gzip'; do
    magic=${pair%%:*} tool=${pair##*:}
    for off in $(LC_ALL=C grep -obUa "$magic" "$VMLINUZ" | cut -d: -f1 | head -n 3); do
      tail -c +$((off + 1)) "$VMLINUZ" | "$tool" -dc 2> /dev/null > "$WORK/vmlinux" || true
      if [ "$(head -c 4 "$WORK/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then return 0; fi
    done
  done
  return 1
}
if unpack_vmlinux; then cp "$WORK/vmlinux" "$OUT/kernel.new"; else cp "$VMLINUZ" "$OUT/kernel.new"; fi

# Modules, dependencies first, from each module's "depends=" field (no kmod needed).
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp,vr,lib/modules,etc}
declare -A DONE
ORDER=()
module_file() { find "$MODDIR" -name "$1.ko*" | head -n1 || true; }
add_module() {
  local name=$1 file deps d
  [ -n "${DONE[$name]:-}" ] && return 0
  DONE[$name]=1
  file=$(module_file "$name")
  [ -n "$file" ] || { file=$(module_file "${name//_/-}"); }
  [ -n "$file" ] || { log "module $name not found"; exit 1; }
  case "$file" in
    *.xz) xz -dc "$file" > "$WORK/$name.ko" ;;
    *.zst) zstd -qdc "$file" > "$WORK/$name.ko" ;;
    *) cp "$file" "$WORK/$name.ko" ;;
  esac
  deps=$(tr '\0' '\n' < "$WORK/$name.ko" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' ')
  for d in $deps; do add_module "$d"; done
  cp "$WORK/$name.ko" "$ROOT/lib/modules/"
  ORDER+=("$name")
}
for m in "${MODULES[@]}"; do add_module "$m"; done
printf '%s\n' "${ORDER[@]}" > "$ROOT/lib/modules/order"

# Userland: busybox, iperf3 and the shared libraries it needs, at their own paths.
cp "$WORK/pkgs/bin/busybox" "$ROOT/bin/busybox"
cp "$WORK/pkgs/usr/bin/iperf3" "$ROOT/bin/iperf3"
cp "$WORK/pkgs/sbin/ethtool" "$ROOT/bin/ethtool"
copy_lib() {
  local f
  # Not lib64/'s copy of the loader: an absolute link to the real one, which cp -L would
  # follow to the host's file (find lists either first, by the file system's order).
  f=$(find "$WORK/pkgs" -name "$1" ! -path "$WORK/pkgs/lib64/*" | head -n1)
  [ -n "$f" ] || { log "library $1 not found"; exit 1; }
  mkdir -p "$ROOT/$(dirname "${f#"$WORK/pkgs"}")"
  cp -L "$f" "$ROOT/${f#"$WORK/pkgs"}"
}
for lib in libmnl.so.0 libiperf.so.0 libsctp.so.1 libssl.so.3 libcrypto.so.3 libc.so.6 libm.so.6 ld-linux-x86-64.so.2; do copy_lib "$lib"; done
mkdir -p "$ROOT/lib64"
ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$ROOT/lib64/ld-linux-x86-64.so.2"

cat > "$ROOT/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | head -n1; }
NAME=$(arg vr.name)
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko 2>/dev/null; done
. /vr/lib.sh
ip link set lo up
i=0
while [ -e /sys/class/net/eth$i ] || [ $i -lt 1 ]; do
  [ -e /sys/class/net/eth$i ] || { sleep 0.1; [ -e /sys/class/net/eth$i ] || break; }
  dev=eth$i
  mtu=$(arg vr.mtu$i); q=$(arg vr.q$i); addr=$(arg vr.ip$i)
  [ -n "$mtu" ] && ip link set $dev mtu $mtu
  [ -n "$q" ] && [ -x /bin/ethtool ] && ethtool -L $dev combined $q
  [ -n "$addr" ] && ip addr add $addr dev $dev
  ip link set $dev up
  echo "VR-NIC vm=$NAME if=$dev mac=$(cat /sys/class/net/$dev/address) ip=$addr mtu=$(cat /sys/class/net/$dev/mtu) rxq=$(ls -d /sys/class/net/$dev/queues/rx-* | wc -l)"
  i=$((i + 1))
done
echo "VR-READY vm=$NAME"
CMD=/sys/firmware/qemu_fw_cfg/by_name/opt/vrouter/cmd/raw
if [ -f $CMD ]; then
  cat $CMD > /tmp/cmd.sh
  timeout "$(arg vr.timeout)" sh -c '. /vr/lib.sh; . /tmp/cmd.sh'
  echo "VR-EXIT vm=$NAME rc=$?"
else
  echo "VR-EXIT vm=$NAME rc=99 (no command)"
fi
poweroff -f
INIT
chmod +x "$ROOT/init"

cat > "$ROOT/vr/lib.sh" <<'LIB'
# Test helpers in the guest; each prints one VR-RESULT line (key=value) and returns 0 on success.
NAME=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^vr.name=//p')
vr_result() { echo "VR-RESULT vm=$NAME $*"; }
# vr_wait_peer IP [SECS]: until IP answers a ping
vr_wait_peer() {
  t=0
  while [ $t -lt ${2:-30} ]; do ping -c 1 -W 1 $1 > /dev/null 2>&1 && { vr_result test=wait_peer dst=$1 ok=1; return 0; }; t=$((t + 1)); done
  vr_result test=wait_peer dst=$1 ok=0; return 1
}
# IP fragments this guest has made so far (/proc/net/snmp, Ip: FragCreates)
vr_frag_creates() {
  awk '/^Ip:/ { if (n++) print $c; else for (i = 1; i <= NF; i++) if ($i == "FragCreates") c = i }' /proc/net/snmp
}
# vr_ping IP [COUNT] [SIZE] [INTERVAL]: ping statistics. busybox ping has no -M do, but the
# kernel sets DF on every packet that fits the MTU and fragments the others: frags= counts
# the fragments made meanwhile, so frags=0 means every echo request went out whole.
vr_ping() {
  frags=$(vr_frag_creates)
  out=$(ping -c ${2:-10} -s ${3:-56} -i ${4:-0.2} -W 2 $1 2>&1)
  frags=$(( $(vr_frag_creates) - frags ))
  sent=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
  recv=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
  rtt=$(echo "$out" | sed -n 's/^round-trip min\/avg\/max = \([0-9.\/]*\) ms/\1/p')
  loss=100; [ -n "$sent" ] && [ "$sent" -gt 0 ] && loss=$(( (sent - recv) * 100 / sent ))
  vr_result test=ping dst=$1 size=${3:-56} sent=${sent:-0} recv=${recv:-0} loss_pct=$loss rtt_ms=${rtt:-none} frags=$frags
  [ "$loss" = 0 ]
}
# vr_iperf_server [iperf3 args]: serves one iperf3 test
vr_iperf_server() { iperf3 -s -1 "$@" > /tmp/iperf-server-$$.log 2>&1; vr_result test=iperf3_server rc=$?; }
# vr_iperf_client IP [SECS] [iperf3 args]: retries until the server listens, reports Mbit/s
vr_iperf_client() {
  ip=$1; secs=${2:-5}; shift 2 2>/dev/null || shift $#
  for try in 1 2 3 4 5 6 7 8 9 10; do
    out=$(iperf3 -c $ip -t $secs -f m "$@" 2>&1) && break
    sleep 1
  done
  rx=$(echo "$out" | grep -E 'receiver$' | tail -n1 | awk '{for (i = 1; i < NF; i++) if ($(i+1) == "Mbits/sec") print $i}')
  tx=$(echo "$out" | grep -E 'sender$' | tail -n1 | awk '{for (i = 1; i < NF; i++) if ($(i+1) == "Mbits/sec") print $i}')
  vr_result test=iperf3 dst=$ip secs=$secs args="$(echo "$@" | tr ' ' '_')" sender_mbps=${tx:-0} receiver_mbps=${rx:-0}
  [ -n "$rx" ]
}
# vr_stats [IF]: the interface counters
vr_stats() {
  d=/sys/class/net/${1:-eth0}/statistics
  echo "VR-STATS vm=$NAME if=${1:-eth0} rx_packets=$(cat $d/rx_packets) tx_packets=$(cat $d/tx_packets) rx_dropped=$(cat $d/rx_dropped) tx_dropped=$(cat $d/tx_dropped)"
}
LIB

(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/initrd.img.new"
mv "$OUT/kernel.new" "$OUT/kernel"
mv "$OUT/initrd.img.new" "$OUT/initrd.img"
echo "$STAMP" > "$OUT/stamp"
log "guest ready: kernel $KVER, $(du -h "$OUT/initrd.img" | cut -f1) initrd, modules: ${ORDER[*]}"
