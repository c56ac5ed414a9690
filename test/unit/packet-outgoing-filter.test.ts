// dropOutgoing(): the socket filter that keeps an AF_PACKET socket blind to frames going
// out of its interface on kernels whose fanout groups ignore PACKET_IGNORE_OUTGOING. Two
// plain AF_PACKET sockets on one end of a veth pair, neither with that option: the one with
// the filter takes what comes in from the peer and nothing the host sends out; the one
// without takes both (so that the host's frames do reach a socket there).
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { ip, vethIntoNamespace } from '../support/netns.ts';
import { addressOf, close, dropOutgoing, frameIovec, interfaceIndex, readFrame, socketCalls } from '../../src/sys/libc.ts';
import { AF_PACKET, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_RAW } from '../../src/sys/linux-constants.ts';

const NETNS = `vrflt${process.pid}`;
const IFACE = `vrf${process.pid % 100000}`;
const PEER = `${IFACE}p`;

/** A non-blocking AF_PACKET socket of every protocol, bound to interface `name`. */
function rawSocket(name: string): number {
  const fd = socketCalls.socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0x0300) as number;
  if (fd < 0) throw new Error('socket(AF_PACKET) failed');
  const sll = new Uint8Array(20);
  const dv = new DataView(sll.buffer);
  dv.setUint16(0, AF_PACKET, true);
  dv.setUint16(2, 0x0300, true);
  dv.setInt32(4, interfaceIndex(name), true);
  if ((socketCalls.bind(fd, sll, sll.length) as number) < 0) throw new Error(`bind to ${name} failed`);
  return fd;
}

const frame = new Uint8Array(new SharedArrayBuffer(2048));
/** The UDP datagrams waiting on fd, read: how many to each destination port (IPv4, no options). */
function datagramsByPort(fd: number): Map<number, number> {
  const counts = new Map<number, number>();
  // Read as a TAP queue reads a frame: through the thread's iovec.
  const at = addressOf(frame);
  frameIovec[0] = at >>> 0;
  frameIovec[1] = (at / 2 ** 32) >>> 0;
  frameIovec[2] = frame.length;
  for (let n = readFrame(fd); n > 0; n = readFrame(fd)) {
    if (n < 42 || frame[12] !== 0x08 || frame[13] !== 0 || frame[23] !== 17) continue;
    const port = (frame[36] << 8) | frame[37];
    counts.set(port, (counts.get(port) ?? 0) + 1);
  }
  return counts;
}

t.test('a socket with dropOutgoing() takes what comes in and nothing the host sends out', async (t) => {
  vethIntoNamespace(t, NETNS, IFACE, PEER);
  ip('addr', 'add', '10.9.7.1/24', 'dev', IFACE);
  ip('link', 'set', IFACE, 'up');
  ip('-n', NETNS, 'addr', 'add', '10.9.7.2/24', 'dev', PEER);
  ip('-n', NETNS, 'link', 'set', PEER, 'up');
  ip('neigh', 'replace', '10.9.7.2', 'lladdr', '02:00:00:00:07:02', 'dev', IFACE);
  ip('-n', NETNS, 'neigh', 'replace', '10.9.7.1', 'lladdr', '02:00:00:00:07:01', 'dev', PEER);

  const filtered = rawSocket(IFACE);
  t.teardown(() => close(filtered));
  dropOutgoing(filtered);
  const plain = rawSocket(IFACE);
  t.teardown(() => close(plain));

  const send = (from: string, to: string, port: number) => `const s = require('node:dgram').createSocket('udp4');
let left = 10;
s.bind(0, '${from}', function send() { if (left-- > 0) s.send(Buffer.alloc(32), ${port}, '${to}', send); else s.close(); });`;
  execFileSync(process.execPath, ['-e', send('10.9.7.1', '10.9.7.2', 9001)]);
  execFileSync('ip', ['netns', 'exec', NETNS, process.execPath, '-e', send('10.9.7.2', '10.9.7.1', 9002)]);
  await new Promise((r) => setTimeout(r, 200));

  const without = datagramsByPort(plain);
  const withFilter = datagramsByPort(filtered);
  t.same([without.get(9001), without.get(9002)], [10, 10], 'without the filter: the 10 datagrams the host sent out of the interface, and the 10 that came in');
  t.equal(withFilter.get(9001) ?? 0, 0, 'with it: none of those the host sent out');
  t.equal(withFilter.get(9002), 10, 'and every one of those that came in from the peer');
});
