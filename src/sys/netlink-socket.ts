// A NETLINK_ROUTE socket, opened in the network namespace of one's choice: the kernel's
// links, addresses, routes, neighbours and nexthop objects, dumped on request and followed
// as they change. Bytes in and out only; src/sys/netlink.ts encodes and decodes them.
import koffi from 'koffi';
import { closeAll, fail, inNetworkNamespace, libc, NETNS_DIR, socketCalls, SysError } from './libc.ts';
import { AF_NETLINK, EAGAIN, EINTR, ENOBUFS, MSG_DONTWAIT, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_RAW, SOL_SOCKET } from './linux-constants.ts';

const c = {
  ...socketCalls,
  send: libc.func('intptr_t send(int fd, const uint8_t *buf, size_t len, int flags)'),
  recvfrom: libc.func('intptr_t recvfrom(int fd, void *buf, size_t len, int flags, _Out_ uint8_t *addr, _Inout_ uint32_t *addrlen)'),
};

const NETLINK_ROUTE = 0;
const SO_RCVBUF = 8;
const SO_RCVBUFFORCE = 33;
const SOL_NETLINK = 270;
const NETLINK_ADD_MEMBERSHIP = 1;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;
const MSG_TRUNC = 0x20;

/** rtnetlink multicast groups (enum rtnetlink_groups in linux/rtnetlink.h) */
export const RTNLGRP_LINK = 1;
export const RTNLGRP_NEIGH = 3;
export const RTNLGRP_IPV4_IFADDR = 5;
export const RTNLGRP_IPV4_ROUTE = 7;
export const RTNLGRP_IPV6_IFADDR = 9;
export const RTNLGRP_IPV6_ROUTE = 11;
/** Linux 5.3+; older kernels refuse to join it */
export const RTNLGRP_NEXTHOP = 32;

/** The file of a network namespace: a name as `ip netns add` makes them (/run/netns/NAME). */
export function netnsPath(netns: string): string {
  if (netns === '' || netns === '.' || netns === '..' || netns.includes('/') || netns.includes('\0')) throw new RangeError(`network namespace name ${JSON.stringify(netns)}`);
  return `${NETNS_DIR}/${netns}`;
}

/** Runs fn with the calling thread in network namespace `netns` (null: where it is); see inNetworkNamespace. */
export function inNetns<T>(netns: string | null, fn: () => T): T {
  if (netns === null) return fn();
  netnsPath(netns);
  return inNetworkNamespace(netns, fn);
}

function setIntOption(fd: number, level: number, option: number, value: number): boolean {
  const v = new Uint8Array(4);
  new DataView(v.buffer).setInt32(0, value, true);
  return (c.setsockopt(fd, level, option, v, 4) as number) === 0;
}

/** Joins an rtnetlink multicast group: its notifications are queued on the socket from now on. */
export function joinGroup(fd: number, group: number): void {
  if (!setIntOption(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)) fail('setsockopt(NETLINK_ADD_MEMBERSHIP)', `group ${group}`);
}

export interface RouteSocketOptions {
  /** a network namespace name or path (see netnsPath), or null for the caller's */
  netns: string | null;
  /** rtnetlink groups (RTNLGRP_*) whose notifications the socket gets */
  groups: readonly number[];
  /**
   * Bytes of notifications the kernel may queue before it drops some (and reports ENOBUFS):
   * SO_RCVBUFFORCE, which root may set past net.core.rmem_max; SO_RCVBUF (capped there)
   * otherwise.
   */
  receiveBufferBytes: number;
}

/** A NETLINK_ROUTE socket, non-blocking, close-on-exec, bound, in the groups asked for. Throws SysError. */
export function openRouteSocket(options: RouteSocketOptions): number {
  const fd = inNetns(options.netns, () => {
    const s = c.socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE) as number;
    if (s < 0) fail('socket', `AF_NETLINK${options.netns === null ? '' : ` in ${options.netns}`}`);
    return s;
  });
  try {
    if (!setIntOption(fd, SOL_SOCKET, SO_RCVBUFFORCE, options.receiveBufferBytes) && !setIntOption(fd, SOL_SOCKET, SO_RCVBUF, options.receiveBufferBytes)) fail('setsockopt(SO_RCVBUF)', `${options.receiveBufferBytes} bytes`);
    // The kernel's reason for a refused request as text; ACKs quote only the request's header. Both optional (Linux 4.12, 4.3).
    setIntOption(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
    setIntOption(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
    // struct sockaddr_nl: family, pad, port id 0 (the kernel assigns one), groups 0 (joined below, by number)
    const addr = new Uint8Array(12);
    addr[0] = AF_NETLINK;
    if ((c.bind(fd, addr, addr.length) as number) < 0) fail('bind', 'AF_NETLINK');
    // Connected to the kernel (port id 0): the kernel refuses (ECONNREFUSED) what another
    // process sends to this socket's port, which would otherwise fill its receive buffer
    // and cost the kernel's own notifications. Multicast notifications still come.
    if ((c.connect(fd, addr, addr.length) as number) < 0) fail('connect', 'AF_NETLINK');
    for (const group of options.groups) joinGroup(fd, group);
  } catch (err) {
    closeAll([fd]);
    throw err;
  }
  return fd;
}

/** Sends one request (or several, back to back) to the kernel. Throws SysError. */
export function netlinkSend(fd: number, message: Uint8Array): void {
  for (;;) {
    const n = c.send(fd, message, message.length, MSG_DONTWAIT) as number;
    if (n === message.length) return;
    if (n >= 0) throw new SysError('send', koffi.os.errno.EMSGSIZE, `netlink, ${n} of ${message.length} bytes`);
    if (koffi.errno() !== EINTR) fail('send', 'netlink');
  }
}

/** netlinkReceive: no datagram is waiting. */
export const NOTHING_PENDING = -1;
/** netlinkReceive: the kernel dropped notifications (ENOBUFS: the receive buffer was full). */
export const NOTIFICATIONS_LOST = -2;
/** netlinkReceive: a datagram was larger than the buffer given; it is gone (give a larger buffer next time). */
export const DATAGRAM_TOO_LARGE = -3;
/** netlinkReceive: a datagram came from a process, not from the kernel; it is gone, unread. */
export const NOT_FROM_KERNEL = -4;

/** struct sockaddr_nl of the sender, and its length: read by every receive, on this thread only. */
const sender = new Uint8Array(12);
const senderView = new DataView(sender.buffer);
const senderLength = new Uint32Array(1);

/**
 * Reads one datagram into `into` without blocking: its length, or one of the four above.
 * Throws SysError for anything else. Only the kernel's datagrams are read: a process with
 * CAP_NET_ADMIN in the namespace may send to the socket's port, and what it sends must not
 * pass for the kernel's routes, addresses or acknowledgements.
 */
export function netlinkReceive(fd: number, into: Uint8Array): number {
  for (;;) {
    senderLength[0] = sender.length;
    // MSG_TRUNC: the datagram's real length, so that a buffer too small is noticed.
    const n = c.recvfrom(fd, into, into.length, MSG_DONTWAIT | MSG_TRUNC, sender, senderLength) as number;
    if (n >= 0 && senderPortId() !== 0) return NOT_FROM_KERNEL;
    if (n > into.length) return DATAGRAM_TOO_LARGE;
    if (n >= 0) return n;
    const errno = koffi.errno();
    if (errno === EAGAIN) return NOTHING_PENDING;
    if (errno === ENOBUFS) return NOTIFICATIONS_LOST;
    if (errno !== EINTR) fail('recvfrom', 'netlink');
  }
}

/** nl_pid of the last sender: 0 for the kernel. A short address counts as no kernel's. */
function senderPortId(): number {
  if (senderLength[0] < sender.length) return -1;
  return senderView.getUint32(4, true);
}
