// File descriptors of the kinds a hostile frontend hands over instead of a proper eventfd,
// made through libc directly (src/sys only makes the well-behaved kinds).
import { openSync } from 'node:fs';
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
const c = {
  pipe2: libc.func('int pipe2(_Out_ int *fds, int flags)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
  write: libc.func('intptr_t write(int fd, const void *buf, size_t count)'),
  read: libc.func('intptr_t read(int fd, void *buf, size_t count)'),
};
const O_CLOEXEC = 0o2000000;
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

/** An fd of a directory. */
export function directoryFd(path: string): number {
  return openSync(path, 'r');
}
