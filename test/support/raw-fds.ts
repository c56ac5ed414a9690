// File descriptors of the kinds a hostile frontend hands over instead of a proper eventfd,
// made through libc directly (src/sys only makes the well-behaved kinds).
import { openSync } from 'node:fs';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import koffi from 'koffi';
import { setNonBlocking } from '../../src/sys/libc.ts';

const libc = koffi.load('libc.so.6');
const c = {
  pipe2: libc.func('int pipe2(_Out_ int *fds, int flags)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
  write: libc.func('intptr_t write(int fd, const void *buf, size_t count)'),
  read: libc.func('intptr_t read(int fd, void *buf, size_t count)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  connect: libc.func('int connect(int fd, const uint8_t *addr, uint32_t addrlen)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int optname, const uint8_t *optval, uint32_t optlen)'),
  close: libc.func('int close(int fd)'),
};
const O_CLOEXEC = 0o2000000;
const AF_INET = 2;
const SOCK_STREAM = 1;
const SOL_SOCKET = 1;
const SO_LINGER = 13;
const O_NONBLOCK = 0o4000;
const F_GETFL = 3;
const F_SETFL = 4;

/** A pipe's two ends: [read, write]. */
export function pipe(): [number, number] {
  const fds = [0, 0];
  if ((c.pipe2(fds, O_CLOEXEC) as number) < 0) throw new Error('pipe2 failed');
  return [fds[0], fds[1]];
}

/** An eventfd without EFD_NONBLOCK: a read on a zero counter, or a write on a full one, blocks. */
export function blockingEventfd(initval = 0): number {
  const fd = c.eventfd(initval, O_CLOEXEC) as number;
  if (fd < 0) throw new Error('eventfd failed');
  return fd;
}

/** Clears O_NONBLOCK on an fd already handed over (the flag is shared with its receiver). */
export function makeBlocking(fd: number): void {
  const flags = c.fcntl(fd, F_GETFL, 0) as number;
  if (flags < 0 || (c.fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) as number) < 0) throw new Error(`fcntl on fd ${fd} failed`);
}

/** Adds value to an eventfd's counter (the largest it holds is 2^64 - 2). */
export function eventfdAdd(fd: number, value: bigint): boolean {
  return (c.write(fd, new BigUint64Array([value]), 8) as number) === 8;
}

/** A plain read(2) of an eventfd's counter: on a blocking one at 0, it waits for a write. */
export function eventfdRead(fd: number): bigint {
  const value = new BigUint64Array(1);
  return (c.read(fd, value, 8) as number) === 8 ? value[0] : -1n;
}

/**
 * A TCP socket on loopback whose close() would wait: data its peer (a server of this
 * process that never reads) has no room for, and SO_LINGER on for `seconds`. Whoever closes
 * the last fd of it waits until the data is sent or the time is up.
 */
export async function lingeringSocket(seconds: number): Promise<{ fd: number; close: () => void }> {
  const peers: Socket[] = [];
  const server = createServer((peer) => {
    peer.pause();
    peers.push(peer);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const fd = c.socket(AF_INET, SOCK_STREAM | O_CLOEXEC, 0) as number;
  const addr = new Uint8Array(16);
  const view = new DataView(addr.buffer);
  view.setUint16(0, AF_INET, true);
  view.setUint16(2, port, false);
  addr.set([127, 0, 0, 1], 4);
  if (fd < 0 || (c.connect(fd, addr, addr.length) as number) < 0) throw new Error('cannot connect a TCP socket on loopback');
  await new Promise<void>((resolve) => (peers.length > 0 ? resolve() : server.once('connection', () => resolve())));
  setNonBlocking(fd);
  const chunk = new Uint8Array(1 << 16);
  let sent = 0;
  for (let n = 0; (n = c.write(fd, chunk, chunk.length) as number) > 0; ) sent += n;
  if (sent === 0) throw new Error('the socket took no data');
  const linger = new Int32Array([1, seconds]);
  if ((c.setsockopt(fd, SOL_SOCKET, SO_LINGER, new Uint8Array(linger.buffer), 8) as number) < 0) throw new Error('setsockopt SO_LINGER failed');
  return {
    fd,
    close: () => {
      for (const peer of peers) peer.destroy();
      server.close();
    },
  };
}

/**
 * Closes an fd of this process (its copy only: what it was sent to keeps its own), as it
 * is: src/sys's close() clears SO_LINGER first, on the socket every copy shares.
 */
export function closeOwn(fd: number): void {
  c.close(fd);
}

/** An fd of a directory. */
export function directoryFd(path: string): number {
  return openSync(path, 'r');
}
