// The NETLINK_ROUTE socket (src/sys/netlink-socket.ts) takes the kernel's datagrams only: a
// process with CAP_NET_ADMIN in the namespace can send to the socket's port id, and what it
// sends must neither pass for the kernel's routes or acknowledgements nor fill the socket's
// buffer (the socket is connected to the kernel, which refuses it; reads check the sender too).
import { execFileSync } from 'node:child_process';
import koffi from 'koffi';
import t from 'tap';
import { closeAll, socketCalls } from '../../src/sys/libc.ts';
import { AF_NETLINK } from '../../src/sys/linux-constants.ts';
import { decodeMessages } from '../../src/sys/netlink.ts';
import { netlinkReceive, NOTHING_PENDING, openRouteSocket, RTNLGRP_LINK } from '../../src/sys/netlink-socket.ts';

const ECONNREFUSED = 111;

const NETNS = `vrnls${process.pid}`;
const RTM_NEWROUTE = 24;
const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const getsockname = koffi.load('libc.so.6').func('int getsockname(int fd, _Out_ uint8_t *addr, _Inout_ uint32_t *addrlen)');

/** The port id the kernel gave the socket (nl_pid of its sockaddr_nl). */
function portIdOf(fd: number): number {
  const addr = new Uint8Array(12);
  const length = new Uint32Array([addr.length]);
  if (getsockname(fd, addr, length) !== 0) throw new Error(`getsockname: errno ${koffi.errno()}`);
  return new DataView(addr.buffer).getUint32(4, true);
}

/** A datagram of one RTM_NEWROUTE header from `fromFd` to port `portId`, what a forger would send: 0, or the errno of its refusal. */
function forge(fromFd: number, portId: number): number {
  const message = new Uint8Array(16);
  const view = new DataView(message.buffer);
  view.setUint32(0, message.length, true);
  view.setUint16(4, RTM_NEWROUTE, true);
  const to = new Uint8Array(12);
  to[0] = AF_NETLINK;
  new DataView(to.buffer).setUint32(4, portId, true);
  const sent = socketCalls.sendto(fromFd, message, message.length, 0, to, to.length) as number;
  return sent === message.length ? 0 : koffi.errno();
}

t.test("a datagram a process sends to the socket is refused; the kernel's are read", async (t) => {
  ip('netns', 'add', NETNS);
  t.teardown(() => ip('netns', 'del', NETNS));
  const watched = openRouteSocket({ netns: NETNS, groups: [RTNLGRP_LINK], receiveBufferBytes: 64 * 1024 });
  const forger = openRouteSocket({ netns: NETNS, groups: [], receiveBufferBytes: 64 * 1024 });
  t.teardown(() => closeAll([watched, forger]));
  const buffer = new Uint8Array(64 * 1024);

  // The socket is connected to the kernel: the kernel refuses what another port sends it.
  t.equal(forge(forger, portIdOf(watched)), ECONNREFUSED, "the forger's datagram is refused by the kernel (ECONNREFUSED)");
  ip('-n', NETNS, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1');
  const n = netlinkReceive(watched, buffer);
  t.ok(n > 0, `then the kernel's notification is read (${n} bytes)`);
  const links = decodeMessages(buffer.subarray(0, n)).filter((ev) => ev.kind === 'link');
  t.ok(links.length > 0 && links.every((ev) => ev.kind === 'link' && ev.op === 'add'), 'and it is the new link', { links });
  // The veth's other end and its changes follow: read them all, then nothing is left.
  let next = netlinkReceive(watched, buffer);
  while (next > 0) next = netlinkReceive(watched, buffer);
  t.equal(next, NOTHING_PENDING, 'nothing else waits');
});
