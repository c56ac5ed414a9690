# Sends Ethernet frames out of an interface through a raw AF_PACKET socket, as a host on the
# link would; run it in the interface's network namespace (ip netns exec NS python3 ...).
#
#   inject-frames.py IFACE FILE [--each] [--wait]
#
# FILE holds records: a flags byte (1: the frame starts with a struct virtio_net_hdr and goes
# out of a PACKET_VNET_HDR socket: a GSO super-frame), a little-endian u32 length, the bytes.
# Every record is sent once, in order, as fast as the socket takes them. Prints one JSON line:
# {"sent": n, "failed": {"EINVAL": n, ...}, "seconds": s, "each": ["ok" | errno name, ...]}
# ("each" with --each only). With --wait it prints "ready" once the frames are read and the
# sockets bound, and sends when a line comes on its stdin.
import errno
import json
import socket
import struct
import sys
import time

SOL_PACKET = 263
PACKET_VNET_HDR = 15  # linux/if_packet.h
VNET = 1


def read_records(path):
    with open(path, 'rb') as f:
        data = f.read()
    records = []
    at = 0
    while at < len(data):
        flags, length = struct.unpack_from('<BI', data, at)
        at += 5
        records.append((flags, data[at:at + length]))
        at += length
    return records


def main():
    iface, path = sys.argv[1], sys.argv[2]
    each = '--each' in sys.argv[3:]
    wait = '--wait' in sys.argv[3:]
    records = read_records(path)
    plain = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    plain.bind((iface, 0))
    vnet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    vnet.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    vnet.bind((iface, 0))
    send_plain, send_vnet = plain.send, vnet.send
    sent = 0
    failed = {}
    results = []
    if wait:
        print('ready', flush=True)
        sys.stdin.readline()
    started = time.perf_counter()
    for flags, frame in records:
        try:
            if flags & VNET:
                send_vnet(frame)
            else:
                send_plain(frame)
            sent += 1
            if each:
                results.append('ok')
        except OSError as err:
            name = errno.errorcode.get(err.errno, str(err.errno))
            failed[name] = failed.get(name, 0) + 1
            if each:
                results.append(name)
    seconds = time.perf_counter() - started
    out = {'sent': sent, 'failed': failed, 'seconds': seconds}
    if each:
        out['each'] = results
    print(json.dumps(out))


main()
