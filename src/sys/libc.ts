// The libc boundary: every system call vrouter makes goes through this module (koffi).
// It is the only place that knows about pointers, structs and errno; callers get numbers,
// ArrayBuffer views and SysError. Every failing call throws SysError naming the call.
import { lstatSync, readlinkSync, unlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import koffi from 'koffi';
import { AF_INET, AF_PACKET, AF_UNIX, EAGAIN, EINTR, ENOBUFS, IFF_UP, MAP_ANONYMOUS, MAP_FAILED, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, MSG_DONTWAIT, PROT_NONE, PROT_READ, PROT_WRITE, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOCK_RAW, SOCK_SEQPACKET, SOCK_STREAM, SOL_SOCKET } from './linux-constants.ts';

const libc = koffi.load('libc.so.6');

/** A failed system call: `call` and `errno` survive postMessage through `code`. */
export class SysError extends Error {
  readonly call: string;
  readonly errno: number;
  readonly code: string;
  constructor(call: string, errno: number, detail = '') {
    const name = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
    super(`${call}${detail ? ` (${detail})` : ''} failed: ${name}`);
    this.name = 'SysError';
    this.call = call;
    this.errno = errno;
    this.code = name;
  }
}

const ERRNO_NAMES = new Map<number, string>(
  Object.entries(koffi.os.errno).map(([name, value]) => [value, name]),
);

const c = {
  memfd_create: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: libc.func('int ftruncate(int fd, int64_t length)'),
  fstat: libc.func('int fstat(int fd, _Out_ uint8_t *statbuf)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
  mmap: libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  // The same call with the address given (MAP_FIXED): koffi takes it as an integer.
  mmapFixed: libc.func('mmap', 'uint64_t', ['uint64_t', 'size_t', 'int', 'int', 'int', 'int64_t']),
  fallocate: libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  munmap: libc.func('int munmap(void *addr, size_t length)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  read: libc.func('intptr_t read(int fd, void *buf, size_t count)'),
  preadv2: libc.func('intptr_t preadv2(int fd, void *iov, int iovcnt, int64_t offset, int flags)'),
  gettid: libc.func('int gettid()'),
  tgkill: libc.func('int tgkill(int tgid, int tid, int sig)'),
  sigaction: libc.func('int sigaction(int sig, const uint8_t *act, void *oldact)'),
  sigactionQuery: libc.func('int sigaction(int sig, void *act, _Out_ uint8_t *oldact)'),
  write: libc.func('intptr_t write(int fd, const void *buf, size_t count)'),
  close: libc.func('int close(int fd)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, const uint8_t *addr, uint32_t addrlen)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  accept4: libc.func('int accept4(int fd, void *addr, void *addrlen, int flags)'),
  connect: libc.func('int connect(int fd, const uint8_t *addr, uint32_t addrlen)'),
  sendmsg: libc.func('intptr_t sendmsg(int fd, void *msg, int flags)'),
  recvmsg: libc.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
  ppoll: libc.func('int ppoll(_Inout_ uint8_t *fds, unsigned long nfds, const uint8_t *timeout, void *sigmask)'),
  malloc: libc.func('void *malloc(size_t size)'),
  // Addresses as uintptr_t, so that callers pass plain numbers: a `void *` parameter wants
  // a BigInt (~20 ns each to make) or an External.
  memcpy: libc.func('void memcpy(uintptr_t dst, uintptr_t src, size_t n)'),
  sched_setaffinity: libc.func('int sched_setaffinity(int pid, size_t cpusetsize, const uint8_t *mask)'),
  sched_getaffinity: libc.func('int sched_getaffinity(int pid, size_t cpusetsize, _Out_ uint8_t *mask)'),
  setpriority: libc.func('int setpriority(int which, uint32_t who, int prio)'),
  prctl: libc.func('int prctl(int option, const char *arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)'),
  fstatfs: libc.func('int fstatfs(int fd, _Out_ uint8_t *buf)'),
  statx: libc.func('int statx(int dirfd, const char *path, int flags, unsigned int mask, _Out_ uint8_t *buf)'),
  chmod: libc.func('int chmod(const char *path, uint32_t mode)'),
  lchown: libc.func('int lchown(const char *path, uint32_t owner, uint32_t group)'),
  unlink: libc.func('int unlink(const char *path)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int optname, _Out_ uint8_t *optval, _Inout_ uint32_t *optlen)'),
  open: libc.func('int open(const char *path, int flags)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int optname, const uint8_t *optval, uint32_t optlen)'),
  if_nametoindex: libc.func('unsigned int if_nametoindex(const char *name)'),
  sendto: libc.func('intptr_t sendto(int fd, void *buf, size_t len, int flags, void *addr, uint32_t addrlen)'),
  ioctl: libc.func('int ioctl(int fd, unsigned long request, _Inout_ uint8_t *arg)'),
  ioctlValue: libc.func('int ioctl(int fd, unsigned long request, unsigned long arg)'),
  setns: libc.func('int setns(int fd, int nstype)'),
  // Frames straight into and out of packet buffers, through frameIovec (readFrame).
  readv: libc.func('intptr_t readv(int fd, void *iov, int iovcnt)'),
  writev: libc.func('intptr_t writev(int fd, void *iov, int iovcnt)'),
};

function fail(call: string, detail = ''): never {
  throw new SysError(call, koffi.errno(), detail);
}

// ---- memory ------------------------------------------------------------------------------

const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
/** koffi.view aborts the process above 4 GiB: larger mappings are seen through windows. */
export const MAX_VIEW_BYTES = 2 ** 32 - 4096;

/** A memfd; `sealing: false` makes one whose seals cannot be changed (as some frontends do). */
export function memfdCreate(name: string, opts: { sealing?: boolean } = {}): number {
  const fd = c.memfd_create(name, MFD_CLOEXEC | (opts.sealing === false ? 0 : MFD_ALLOW_SEALING)) as number;
  if (fd < 0) fail('memfd_create', name);
  return fd;
}

const MFD_HUGETLB = 4;
const MFD_HUGE_SHIFT = 26;

/** A memfd of huge pages of `pageBytes` (a power of 2), or -1 where the kernel has none of that size. */
export function hugePageMemfdCreate(name: string, pageBytes: number): number {
  return c.memfd_create(name, MFD_CLOEXEC | MFD_HUGETLB | (Math.log2(pageBytes) << MFD_HUGE_SHIFT)) as number;
}

export function ftruncate(fd: number, length: number): void {
  if ((c.ftruncate(fd, length) as number) < 0) fail('ftruncate', `fd ${fd}`);
}

const statBuf = new Uint8Array(144); // sizeof(struct stat) on x86-64
/** The size of the file behind fd (st_size, offset 48 of x86-64 struct stat). */
export function fstatSize(fd: number): number {
  if ((c.fstat(fd, statBuf) as number) < 0) fail('fstat', `fd ${fd}`);
  return Number(new DataView(statBuf.buffer).getBigInt64(48, true));
}

/**
 * The block size of the file behind fd (st_blksize, offset 56): the page size its mappings
 * are made of, a huge page's on hugetlbfs (whose mmap offsets must be multiples of it).
 */
export function fstatBlockSize(fd: number): number {
  if ((c.fstat(fd, statBuf) as number) < 0) fail('fstat', `fd ${fd}`);
  return Number(new DataView(statBuf.buffer).getBigInt64(56, true));
}

const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
const F_SEAL_SHRINK = 2;

/**
 * Makes sure the file behind fd can never shrink (memfd seal F_SEAL_SHRINK): a mapping
 * past the end of its file raises SIGBUS, which no JavaScript can catch. Returns false
 * if the file cannot be sealed (not a memfd made with MFD_ALLOW_SEALING, or sealed shut).
 */
export function sealAgainstShrinking(fd: number): boolean {
  const seals = c.fcntl(fd, F_GET_SEALS, 0) as number;
  if (seals >= 0 && (seals & F_SEAL_SHRINK) !== 0) return true;
  return seals >= 0 && (c.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) as number) === 0;
}

/** statfs f_type values (linux/magic.h) of the file systems guest memory may live on. */
export const TMPFS_MAGIC = 0x01021994;
export const HUGETLBFS_MAGIC = 0x958458f6;

const statfsBuf = new Uint8Array(120); // sizeof(struct statfs) on x86-64
/** The type of the file system the file behind fd is on (f_type, offset 0 of struct statfs). */
export function fileSystemType(fd: number): number {
  if ((c.fstatfs(fd, statfsBuf) as number) < 0) fail('fstatfs', `fd ${fd}`);
  return Number(new DataView(statfsBuf.buffer).getBigInt64(0, true));
}

const AT_EMPTY_PATH = 0x1000;
const AT_STATX_DONT_SYNC = 0x4000;
const statxBuf = new Uint8Array(256); // sizeof(struct statx)
/**
 * The device number of the file system the file behind fd is on (stx_dev_major and
 * stx_dev_minor, offsets 136 and 140 of struct statx), as the kernel holds it: no field is
 * asked for (the device comes whatever the mask) and AT_STATX_DONT_SYNC lets no file
 * system be asked either (fstat() of a file on FUSE waits for its daemon's answer, this
 * does not).
 */
export function fileDevice(fd: number): { major: number; minor: number } {
  if ((c.statx(fd, '', AT_EMPTY_PATH | AT_STATX_DONT_SYNC, 0, statxBuf) as number) < 0) fail('statx', `fd ${fd}`);
  const view = new DataView(statxBuf.buffer);
  return { major: view.getUint32(136, true), minor: view.getUint32(140, true) };
}

const MAP_NORESERVE = 0x4000;

/**
 * Maps `length` bytes of fd from `offset` (a multiple of the file's page size), shared,
 * read-write. Returns the host address.
 * `sparse`: no swap is reserved for it (a large file whose pages are mostly never touched).
 */
export function mmapShared(fd: number, length: number, sparse = false, offset = 0): bigint {
  const addr = c.mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED | (sparse ? MAP_NORESERVE : 0), fd, offset) as bigint;
  if (addr === MAP_FAILED || addr === 0n) fail('mmap', `fd ${fd}, ${length} bytes at ${offset}`);
  return addr;
}

/**
 * Replaces the pages at [addr, addr + length) of this process's memory with those of fd from
 * `offset` (MAP_FIXED, shared, read-write). Whatever was mapped there is gone: the caller
 * owns that range (shared-mapping.ts).
 */
export function mmapSharedAt(addr: number, fd: number, length: number, offset: number): void {
  const at = c.mmapFixed(addr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, offset) as number | bigint;
  if (Number(at) !== addr) fail('mmap', `fd ${fd}, ${length} bytes at ${offset}, fixed`);
}

/**
 * Replaces the pages at [addr, addr + length) with address space only: inaccessible
 * (PROT_NONE, an access faults), nothing committed (MAP_NORESERVE), and held, so that
 * nothing else is mapped there.
 */
export function mmapReservedAt(addr: number, length: number): void {
  const at = c.mmapFixed(addr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) as number | bigint;
  if (Number(at) !== addr) fail('mmap', `${length} bytes reserved, fixed`);
}

export function munmap(addr: bigint, length: number): void {
  if ((c.munmap(addr, length) as number) < 0) fail('munmap', `${length} bytes`);
}

const FALLOC_FL_KEEP_SIZE = 1;
const FALLOC_FL_PUNCH_HOLE = 2;

/**
 * Gives the pages of a file range back to the system (fallocate PUNCH_HOLE): mappings stay
 * valid and read zeros there, so a late reader sees zeros, never a fault.
 */
export function punchHole(fd: number, offset: number, length: number): void {
  if ((c.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) as number) < 0) fail('fallocate(PUNCH_HOLE)', `fd ${fd}`);
}

/** A zero-copy ArrayBuffer over host memory (any thread of this process may make one). */
export function view(addr: bigint, length: number): ArrayBuffer {
  if (length <= 0 || length > MAX_VIEW_BYTES) throw new RangeError(`view of ${length} bytes: must be 1..${MAX_VIEW_BYTES}`);
  return koffi.view(addr, length);
}

/**
 * The address of the first byte of a view over a SharedArrayBuffer or over mapped memory
 * (koffi.view), as a number (user-space addresses stay below 2^47, exact in a double).
 * Both kinds of backing store never move, and a SharedArrayBuffer posted to a worker keeps
 * its backing store: every thread finds the same address. Not for an ordinary small typed
 * array, whose bytes may live on the JavaScript heap and move with the garbage collector.
 */
export function addressOf(v: ArrayBufferView): number {
  return Number(koffi.address(v));
}

/**
 * Copies n bytes from address src to address dst (libc memcpy; the ranges must not
 * overlap). Nothing is checked: both ranges must already be proven inside live memory, or
 * the process dies (SIGSEGV) or reads and writes what it must not. Measured ~50 ns a call
 * plus the copy. Not free of allocation: an address is a number past the small-integer
 * range, which V8 boxes (16 bytes, young generation) to hand it to koffi, two per call; the
 * data path copies with Node's instead (src/dataplane/native-copy.ts), this is the copy
 * micro-benchmark's comparison.
 */
export const memcpyAt: (dst: number, src: number, n: number) => void = c.memcpy as (dst: number, src: number, n: number) => void;

// ---- eventfd -------------------------------------------------------------------------------

const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;

export function eventfd(): number {
  const fd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) as number;
  if (fd < 0) fail('eventfd');
  return fd;
}

const ONE = new BigUint64Array([1n]);
/** Signals an eventfd. Hot path (guest interrupts): returns false instead of throwing. */
export function eventfdSignal(fd: number): boolean {
  return (c.write(fd, ONE, 8) as number) === 8;
}

/** A call that blocked returns EINTR when its thread is sent INTERRUPT_SIGNAL (interruptThread). */
export function lastCallInterrupted(): boolean {
  return koffi.errno() === EINTR;
}

// The counter read through preadv2 from native memory: its struct iovec points there.
const drainValue = koffi.alloc('uint64_t', 1);
const drainIovec = koffi.alloc('uint64_t', 2);
const drained = new BigUint64Array(koffi.view(drainValue, 8));
new BigUint64Array(koffi.view(drainIovec, 16)).set([BigInt(koffi.address(drainValue)), 8n]);
const RWF_NOWAIT = 8;
const EOPNOTSUPP = 95;
/** preadv2 refused RWF_NOWAIT on an eventfd (a kernel before 5.12): plain reads then */
let noWaitRefused = false;
/**
 * Reads and clears an eventfd counter; 0 when nothing was pending or the read failed.
 * Never throws and never blocks: the data path and the control thread call it on fds a
 * frontend sent, which it may make blocking (O_NONBLOCK is the open file's, shared with
 * it) at any moment: RWF_NOWAIT is this read's own.
 */
export function eventfdDrain(fd: number): number {
  if (!noWaitRefused) {
    const n = c.preadv2(fd, drainIovec, 1, -1, RWF_NOWAIT) as number;
    if (n === 8) return Number(drained[0]);
    if (n >= 0 || koffi.errno() !== EOPNOTSUPP) return 0;
    noWaitRefused = true;
  }
  const n = c.read(fd, drainValue, 8) as number;
  return n === 8 ? Number(drained[0]) : 0;
}

// ---- interrupting a thread blocked in a call ---------------------------------------------

/**
 * A real-time signal glibc leaves to applications (it keeps 32 and 33), which Node and V8
 * do not use: its handler does nothing, and is installed without SA_RESTART, so a thread
 * sent it returns from a blocking call (a write to an eventfd a frontend made blocking and
 * full) with EINTR, where terminating the thread could not stop it.
 */
const INTERRUPT_SIGNAL = 40;
/** struct sigaction on x86-64 glibc: handler, 128-byte mask, flags, restorer */
const SIGACTION_BYTES = 152;

/**
 * Installs INTERRUPT_SIGNAL's handler in this process (for all its threads). The handler
 * is libc's getpid: a function that ignores its argument, changes nothing and is
 * async-signal-safe; no JS can run in a signal handler.
 */
export function installInterruptHandler(): void {
  // Declared here: dlsym is in libc.so.6 from glibc 2.34 on, and only this needs it.
  const dlsym = libc.func('void *dlsym(void *handle, const char *name)');
  const handler = dlsym(null, 'getpid');
  if (handler === null) fail('dlsym', 'getpid');
  const act = new Uint8Array(SIGACTION_BYTES);
  new DataView(act.buffer).setBigUint64(0, BigInt(koffi.address(handler)), true);
  if ((c.sigaction(INTERRUPT_SIGNAL, act, null) as number) < 0) fail('sigaction');
}

/** Whether INTERRUPT_SIGNAL has a handler here: sent without one, it would end the process. */
export function interruptHandlerInstalled(): boolean {
  const old = new Uint8Array(SIGACTION_BYTES);
  if ((c.sigactionQuery(INTERRUPT_SIGNAL, null, old) as number) < 0) return false;
  return new DataView(old.buffer).getBigUint64(0, true) > 1n; // not SIG_DFL (0) nor SIG_IGN (1)
}

/** This thread's id, as tgkill names it. */
export function threadId(): number {
  return c.gettid() as number;
}

/** Sends INTERRUPT_SIGNAL to thread `tid` of process `pid`; false if it is gone. */
export function interruptThread(pid: number, tid: number): boolean {
  return (c.tgkill(pid, tid, INTERRUPT_SIGNAL) as number) === 0;
}

const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

/** Whether reads and writes on fd return EAGAIN instead of blocking (false if fd is not open). */
export function isNonBlocking(fd: number): boolean {
  const flags = c.fcntl(fd, F_GETFL, 0) as number;
  return flags >= 0 && (flags & O_NONBLOCK) !== 0;
}

/** Sets O_NONBLOCK on the open file description (shared with every process holding it). */
export function setNonBlocking(fd: number): void {
  const flags = c.fcntl(fd, F_GETFL, 0) as number;
  if (flags < 0 || (c.fcntl(fd, F_SETFL, flags | O_NONBLOCK) as number) < 0) fail('fcntl(F_SETFL)', `fd ${fd}`);
}

/**
 * Why a frontend's fd cannot serve as a vring's kick, call or error eventfd, or null if it
 * can: it must be an eventfd (a directory, pipe or socket would make reads fail or block),
 * and non-blocking, so that the PMD never waits on a counter the frontend filled.
 */
export function eventfdProblem(fd: number): string | null {
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return `fd ${fd} is not open`;
  }
  if (target !== 'anon_inode:[eventfd]') {
    const kind = target.startsWith('/') ? 'a file or directory' : target.replace(/^anon_inode:\[(.*)\]$/, '$1').replace(/:\[.*\]$/, '');
    return `not an eventfd but ${kind}`;
  }
  if (!isNonBlocking(fd)) return 'a blocking eventfd (O_NONBLOCK not set)';
  return null;
}

const SO_LINGER = 13;
/** struct linger { l_onoff 0, l_linger 0 }: close() returns at once, the kernel sends what is left */
const NO_LINGER = new Uint8Array(8);

/**
 * Clears SO_LINGER on a socket about to be closed: an fd a frontend sent may be a TCP socket
 * it set to linger, with data its peer never reads, and it closes its own copy; our close()
 * of the last one would wait the linger time (hours if it likes) for that data, holding the
 * thread that closes it (the control thread: every port's messages). Not a socket: ENOTSOCK,
 * nothing done.
 */
function noLinger(fd: number): void {
  c.setsockopt(fd, SOL_SOCKET, SO_LINGER, NO_LINGER, NO_LINGER.length);
}

export function close(fd: number): void {
  noLinger(fd);
  if ((c.close(fd) as number) < 0) fail('close', `fd ${fd}`);
}

/** Closes fds, collecting nothing: used on cleanup paths where each fd must be tried. */
export function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) {
    if (fd < 0) continue;
    noLinger(fd);
    c.close(fd);
  }
}

// ---- AF_UNIX sockets with SCM_RIGHTS ---------------------------------------------------------

const SCM_RIGHTS = 1;
const MSG_NOSIGNAL = 0x4000;
const MSG_CTRUNC = 0x8;
const MSG_CMSG_CLOEXEC = 0x40000000;
const SUN_PATH_MAX = 108;
/** vhost-user sends at most 8 fds with a message; more are cut off on receipt (MSG_CTRUNC). */
export const MAX_FDS_PER_MESSAGE = 8;
/** Sending allows more, so that tests can play a frontend that breaks the rule. */
const MAX_SEND_FDS = 16;

function sockaddrUn(path: string): Uint8Array {
  const bytes = Buffer.from(path);
  if (bytes.length >= SUN_PATH_MAX) throw new SysError('bind', koffi.os.errno.ENAMETOOLONG, path);
  const addr = new Uint8Array(2 + SUN_PATH_MAX);
  addr[0] = AF_UNIX;
  addr.set(bytes, 2);
  return addr;
}

function unixSocket(): number {
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail('socket');
  return fd;
}

export interface SocketAccess {
  /** permission bits of the socket file (connecting needs write permission) */
  mode?: number;
  /** group of the socket file; its owner stays the user vrouter runs as */
  gid?: number | null;
}

/**
 * A non-blocking listening AF_UNIX stream socket at path (the path must not exist), with
 * the permissions of `access`. They are set between bind and listen: a socket that is bound
 * but not listening refuses every connection, so no one can connect while the file still
 * has the looser mode bind gave it.
 */
export function unixListen(path: string, access: SocketAccess = {}, backlog = 16): number {
  const fd = unixSocket();
  const addr = sockaddrUn(path);
  if ((c.bind(fd, addr, addr.length) as number) < 0) {
    const err = new SysError('bind', koffi.errno(), path);
    c.close(fd);
    throw err;
  }
  const failed = (call: string): never => {
    const err = new SysError(call, koffi.errno(), path);
    c.close(fd);
    c.unlink(path);
    throw err;
  };
  // lchown: the (uid_t)-1 owner leaves the owner as it is.
  if (access.gid !== undefined && access.gid !== null && (c.lchown(path, 0xffffffff, access.gid) as number) < 0) failed(`chown to gid ${access.gid}`);
  if (access.mode !== undefined && (c.chmod(path, access.mode) as number) < 0) failed(`chmod 0${access.mode.toString(8)}`);
  if ((c.listen(fd, backlog) as number) < 0) failed('listen');
  return fd;
}

/** Connects a non-blocking AF_UNIX stream socket to path (unix connects complete at once). */
export function unixConnect(path: string): number {
  const fd = unixSocket();
  const addr = sockaddrUn(path);
  if ((c.connect(fd, addr, addr.length) as number) < 0) {
    const err = new SysError('connect', koffi.errno(), path);
    c.close(fd);
    throw err;
  }
  return fd;
}

const ECONNREFUSED = 111;

/**
 * A socket file left by an earlier run is replaced. Any other file at the path is an error,
 * and so is a socket something listens on (another vrouter's port, the admin endpoint's,
 * another service's): replaced, it would be taken from whoever serves it.
 */
export function removeStaleSocket(path: string): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return;
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket`);
  try {
    closeAll([unixConnect(path)]);
  } catch (err) {
    // Refused: nothing listens there any more.
    if (err instanceof SysError && err.errno === ECONNREFUSED) return void unlinkSync(path);
    throw new Error(`${path} is a socket in use (${(err as Error).message})`);
  }
  throw new Error(`${path} is a socket in use: something listens on it`);
}

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

const SO_PEERCRED = 17;
const ucredBuf = new Uint8Array(12); // struct ucred: pid, uid, gid as 32-bit integers
const ucredLen = new Uint32Array(1);
/**
 * The process at the other end of a connected AF_UNIX socket (SO_PEERCRED): the one that
 * connected, or for a socket we connected, the one that called listen. Set by the kernel,
 * so the peer cannot forge it.
 */
export function peerCredentials(fd: number): PeerCredentials {
  ucredLen[0] = ucredBuf.length;
  if ((c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ucredBuf, ucredLen) as number) < 0) fail('getsockopt(SO_PEERCRED)', `fd ${fd}`);
  if (ucredLen[0] !== ucredBuf.length) throw new SysError('getsockopt(SO_PEERCRED)', koffi.os.errno.EINVAL, `${ucredLen[0]} bytes`);
  const dv = new DataView(ucredBuf.buffer);
  return { pid: dv.getInt32(0, true), uid: dv.getUint32(4, true), gid: dv.getUint32(8, true) };
}

/** Accepts one pending connection; -1 when none is pending. */
export function accept(listenFd: number): number {
  const fd = c.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
  if (fd < 0) {
    if (koffi.errno() === EAGAIN || koffi.errno() === EINTR) return -1;
    fail('accept4', `fd ${listenFd}`);
  }
  return fd;
}

// One native scratch block per thread and per kind of socket for msghdr + iovec + cmsg +
// data: a struct-free layout filled through a DataView is about twice as fast as koffi
// struct marshalling.
const MSGHDR = 0; // struct msghdr, 56 bytes on x86-64
const IOVEC = 64; // struct iovec, 16 bytes
const CMSG = 128; // cmsghdr (16) + the fds
export const MAX_MESSAGE_BYTES = 8192;

interface Scratch {
  ptr: bigint;
  dv: DataView;
  bytes: Uint8Array;
  /** where the data starts, past the largest control message */
  data: number;
  maxData: number;
  maxFds: number;
}

function makeScratch(maxData: number, maxFds: number): Scratch {
  const data = CMSG + ((16 + 4 * maxFds + 63) & ~63);
  const size = data + maxData;
  const ptr = c.malloc(size) as bigint;
  if (ptr === 0n) fail('malloc', `${size} bytes`);
  const buf = koffi.view(ptr, size);
  return { ptr, dv: new DataView(buf), bytes: new Uint8Array(buf), data, maxData, maxFds };
}

/** vhost-user messages: small, at most 8 fds received (16 sent, to play a rule-breaking frontend). */
let vhostScratch: Scratch | null = null;
const vhost = () => (vhostScratch ??= makeScratch(MAX_MESSAGE_BYTES, MAX_SEND_FDS));
/** Between vrouter's own processes (SOCK_SEQPACKET): larger packets, more fds. */
export const MAX_PACKET_BYTES = 65536;
export const MAX_PACKET_FDS = 64;
let packetScratch: Scratch | null = null;
const packet = () => (packetScratch ??= makeScratch(MAX_PACKET_BYTES, MAX_PACKET_FDS));

function fillMsghdr(s: Scratch, dataLen: number, controlLen: number): void {
  const dv = s.dv;
  dv.setBigUint64(MSGHDR + 0, 0n, true); // msg_name
  dv.setUint32(MSGHDR + 8, 0, true); // msg_namelen
  dv.setBigUint64(MSGHDR + 16, s.ptr + BigInt(IOVEC), true); // msg_iov
  dv.setBigUint64(MSGHDR + 24, 1n, true); // msg_iovlen
  dv.setBigUint64(MSGHDR + 32, controlLen ? s.ptr + BigInt(CMSG) : 0n, true); // msg_control
  dv.setBigUint64(MSGHDR + 40, BigInt(controlLen), true); // msg_controllen
  dv.setInt32(MSGHDR + 48, 0, true); // msg_flags
  dv.setBigUint64(IOVEC + 0, s.ptr + BigInt(s.data), true);
  dv.setBigUint64(IOVEC + 8, BigInt(dataLen), true);
}

/** sendmsg through scratch `s`; returns the bytes sent, or -1 with errno set. */
function sendWith(s: Scratch, fd: number, data: Uint8Array, fds: readonly number[]): number {
  if (data.length > s.maxData) throw new RangeError(`message of ${data.length} bytes`);
  if (fds.length > s.maxFds) throw new RangeError(`${fds.length} fds in one message`);
  s.bytes.set(data, s.data);
  const controlLen = fds.length ? 16 + 4 * fds.length : 0;
  if (controlLen) {
    s.dv.setBigUint64(CMSG + 0, BigInt(controlLen), true);
    s.dv.setInt32(CMSG + 8, SOL_SOCKET, true);
    s.dv.setInt32(CMSG + 12, SCM_RIGHTS, true);
    fds.forEach((f, i) => s.dv.setInt32(CMSG + 16 + 4 * i, f, true));
  }
  fillMsghdr(s, data.length, controlLen === 0 ? 0 : (controlLen + 7) & ~7);
  return c.sendmsg(fd, s.ptr + BigInt(MSGHDR), MSG_NOSIGNAL | MSG_DONTWAIT) as number;
}

/** Sends data with up to 8 fds attached (SCM_RIGHTS). Returns the bytes sent. */
export function sendMsg(fd: number, data: Uint8Array, fds: readonly number[] = []): number {
  const n = sendWith(vhost(), fd, data, fds);
  if (n < 0) fail('sendmsg', `fd ${fd}`);
  return n;
}

/**
 * Sends one packet on a SOCK_SEQPACKET socket with up to MAX_PACKET_FDS fds, without
 * blocking: false when the socket buffer is full (EAGAIN), to be tried again later.
 */
export function sendPacket(fd: number, data: Uint8Array, fds: readonly number[] = []): boolean {
  if (sendWith(packet(), fd, data, fds) >= 0) return true;
  if (koffi.errno() === EAGAIN || koffi.errno() === EINTR) return false;
  fail('sendmsg', `fd ${fd}`);
}

export interface Received {
  /** bytes read into the buffer; 0 means the peer closed the connection */
  length: number;
  fds: number[];
  /** the peer sent more fds than fit (they were closed by the kernel or by us) */
  fdsTruncated: boolean;
}

function recvWith(s: Scratch, fd: number, into: Uint8Array, maxFds: number): Received | null {
  const want = Math.min(into.length, s.maxData);
  fillMsghdr(s, want, 16 + 4 * maxFds);
  const n = c.recvmsg(fd, s.ptr + BigInt(MSGHDR), MSG_DONTWAIT | MSG_CMSG_CLOEXEC) as number;
  if (n < 0) {
    if (koffi.errno() === EAGAIN || koffi.errno() === EINTR) return null;
    fail('recvmsg', `fd ${fd}`);
  }
  into.set(s.bytes.subarray(s.data, s.data + n), 0);
  const fds: number[] = [];
  const controlLen = Number(s.dv.getBigUint64(MSGHDR + 40, true));
  // Walk the control messages: any level/type other than SCM_RIGHTS is ignored.
  let off = 0;
  while (off + 16 <= controlLen) {
    const len = Number(s.dv.getBigUint64(CMSG + off, true));
    if (len < 16 || off + len > controlLen) break;
    if (s.dv.getInt32(CMSG + off + 8, true) === SOL_SOCKET && s.dv.getInt32(CMSG + off + 12, true) === SCM_RIGHTS) {
      for (let p = 16; p + 4 <= len; p += 4) fds.push(s.dv.getInt32(CMSG + off + p, true));
    }
    off += (len + 7) & ~7;
  }
  const fdsTruncated = (s.dv.getInt32(MSGHDR + 48, true) & MSG_CTRUNC) !== 0;
  return { length: n, fds, fdsTruncated };
}

/**
 * Reads up to `into.length` bytes without blocking, with the fds that came with them
 * (at most 8: a vhost-user message). Returns null when nothing is pending. Received fds
 * are CLOEXEC.
 */
export function recvMsg(fd: number, into: Uint8Array): Received | null {
  return recvWith(vhost(), fd, into, MAX_FDS_PER_MESSAGE);
}

/** recvMsg for a SOCK_SEQPACKET socket between vrouter's processes (sendPacket). */
export function recvPacket(fd: number, into: Uint8Array): Received | null {
  return recvWith(packet(), fd, into, MAX_PACKET_FDS);
}

/** A connected pair of non-blocking AF_UNIX SOCK_SEQPACKET sockets (message boundaries kept). */
export function seqpacketPair(): [number, number] {
  const sv = new Int32Array(2);
  if ((c.socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) as number) < 0) fail('socketpair');
  return [sv[0], sv[1]];
}

// ---- readiness ------------------------------------------------------------------------------

export interface Watch {
  /** no more callbacks until resume() (the fd stays registered) */
  pause(): void;
  resume(): void;
  stop(): void;
}

/**
 * Calls onReadable from the event loop while fd is readable or hung up (libuv poll).
 * Never watch the same fd twice, and stop the watch before closing the fd: koffi aborts
 * the process otherwise.
 */
export function watchReadable(fd: number, onReadable: (hangup: boolean) => void): Watch {
  const events = { readable: true, disconnect: true };
  const callback = (ev: { disconnect: boolean }) => onReadable(Boolean(ev.disconnect));
  const handle = koffi.node.poll(fd, events, callback);
  let open = true;
  let paused = false;
  return {
    pause() {
      if (open && !paused) {
        paused = true;
        handle.stop();
      }
    },
    resume() {
      if (open && paused) {
        paused = false;
        handle.start(events, callback);
      }
    },
    stop() {
      if (open) {
        open = false;
        handle.close();
      }
    },
  };
}

const POLLIN = 1;

/** A pollfd array for waitReadable(): 8 bytes per fd, POLLIN asked on each. */
export function pollSet(fds: readonly number[]): Uint8Array {
  const set = new Uint8Array(8 * fds.length);
  const dv = new DataView(set.buffer);
  fds.forEach((fd, i) => {
    dv.setInt32(8 * i, fd, true);
    dv.setInt16(8 * i + 4, POLLIN, true);
  });
  return set;
}

const timespec = new BigInt64Array(2);
/**
 * Blocks the calling thread until an fd of the set is readable or timeoutUs passes
 * (ppoll: microsecond timeouts). Returns the number of ready fds; see isReady().
 */
export function waitReadable(set: Uint8Array, count: number, timeoutUs: number): number {
  timespec[0] = BigInt(Math.floor(timeoutUs / 1e6));
  timespec[1] = BigInt(Math.round((timeoutUs % 1e6) * 1000));
  const n = c.ppoll(set, count, new Uint8Array(timespec.buffer), null) as number;
  if (n < 0) {
    if (koffi.errno() === EINTR) return 0;
    fail('ppoll');
  }
  return n;
}

/** After waitReadable(): whether entry i of the set is readable. */
export function isReady(set: Uint8Array, i: number): boolean {
  return (set[8 * i + 6] & POLLIN) !== 0;
}

// ---- threads ----------------------------------------------------------------------------------

/** Pins the calling thread to one CPU (sched_setaffinity with pid 0 = this thread). */
export function pinThreadToCpu(cpu: number): void {
  setThreadCpus([cpu]);
}

/** sizeof(cpu_set_t): a mask of 1024 CPUs */
const CPU_SET_BYTES = 128;

/** Lets the calling thread (or thread `tid` of this process) run on these CPUs only. */
export function setThreadCpus(cpus: readonly number[], tid = 0): void {
  const mask = new Uint8Array(CPU_SET_BYTES);
  for (const cpu of cpus) {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= mask.length * 8) throw new RangeError(`cpu ${cpu}`);
    mask[cpu >> 3] |= 1 << (cpu & 7);
  }
  if ((c.sched_setaffinity(tid, mask.length, mask) as number) < 0) fail('sched_setaffinity', `cpus ${cpus.join(',')}${tid === 0 ? '' : ` for thread ${tid}`}`);
}

/** The CPUs the calling thread may run on. */
export function threadCpus(): number[] {
  const mask = new Uint8Array(CPU_SET_BYTES);
  if ((c.sched_getaffinity(0, mask.length, mask) as number) < 0) fail('sched_getaffinity', 'this thread');
  const cpus: number[] = [];
  for (let cpu = 0; cpu < mask.length * 8; cpu++) if ((mask[cpu >> 3] & (1 << (cpu & 7))) !== 0) cpus.push(cpu);
  return cpus;
}

/**
 * Calls `start` (which creates a thread: a Worker) with the calling thread on `cpus` alone,
 * then puts the calling thread back where it was: a new thread is born with its creator's
 * CPUs, so it runs there from its first instruction, its start-up included. Where the
 * calling thread cannot go there, `start` runs where it is (the thread pins itself later).
 */
export function startOnCpus<T>(cpus: readonly number[], start: () => T): T {
  let own: number[] | null = null;
  try {
    const before = threadCpus();
    setThreadCpus(cpus);
    own = before;
  } catch {
    // not moved: started where this thread runs
  }
  try {
    return start();
  } finally {
    // The set it had a moment ago: allowed then, allowed now.
    if (own !== null) setThreadCpus(own);
  }
}

const PRIO_PROCESS = 0;
/**
 * Sets a thread's nice value: the calling thread's, or thread `tid` of this process. On
 * Linux it is a per-thread attribute, which threads and processes started from a thread
 * inherit. Lowering it below what the thread has needs CAP_SYS_NICE (or RLIMIT_NICE to allow
 * it); raising it never does.
 */
export function setThreadNice(nice: number, tid = 0): void {
  if ((c.setpriority(PRIO_PROCESS, tid, nice) as number) < 0) fail('setpriority', `nice ${nice}${tid === 0 ? '' : ` for thread ${tid}`}`);
}

const PR_SET_NAME = 15;
/** Names the calling thread (visible in top -H and /proc/self/task/N/comm; 15 chars). */
export function setThreadName(name: string): void {
  if ((c.prctl(PR_SET_NAME, name.slice(0, 15), 0, 0, 0) as number) < 0) fail('prctl(PR_SET_NAME)', name);
}

// ---- process ----------------------------------------------------------------------------------

/** prctl with a number as its second argument (the declaration above passes a string). */
const prctlNumber = libc.func('int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)');
const PR_SET_PDEATHSIG = 1;

/**
 * Asks the kernel to send `signal` to this process when its parent exits (prctl
 * PR_SET_PDEATHSIG). man-pages 6.7, prctl(2), PR_SET_PDEATHSIG: "the 'parent' in this case
 * is considered to be the thread that created this process. In other words, the signal will
 * be sent when that thread terminates". It is cleared for a fork(2) child and when executing
 * a set-user-ID or set-group-ID binary or one with file capabilities. A parent that died
 * before the call goes unnoticed: compare process.ppid before and after.
 */
export function setParentDeathSignal(signal: NodeJS.Signals | number): void {
  const number = typeof signal === 'number' ? signal : osConstants.signals[signal];
  if (!Number.isInteger(number) || number <= 0) throw new RangeError(`signal ${signal}`);
  if ((prctlNumber(PR_SET_PDEATHSIG, number, 0, 0, 0) as number) < 0) fail('prctl(PR_SET_PDEATHSIG)', String(signal));
}

// ---- TAP devices -----------------------------------------------------------------------------

const O_RDWR = 2;
const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const TUNSETIFF = 0x400454ca;
const TUNGETIFF = 0x800454d2;
/** _IO('T', 227), Linux 5.2 */
const TUNGETDEVNETNS = 0x54e3;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_MULTI_QUEUE = 0x0100;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const SIOCSIFMTU = 0x8922;
/** struct ifreq on x86-64: the name (IFNAMSIZ 16), then a union of at most 24 bytes */
const IFREQ_BYTES = 40;
export const IFNAMSIZ = 16;

function ifreq(name: string): Uint8Array {
  const bytes = new TextEncoder().encode(name);
  if (bytes.length === 0 || bytes.length >= IFNAMSIZ) throw new SysError('ifreq', 22, `interface name "${name}" must be 1-${IFNAMSIZ - 1} bytes`);
  const req = new Uint8Array(IFREQ_BYTES);
  req.set(bytes);
  return req;
}

/**
 * Creates (or attaches to) the TAP interface `name` and returns its fd, non-blocking: each
 * read gives one frame the kernel sends out of the interface, each write one frame it
 * receives on it (no packet information header). `multiQueue`: the fd is one queue of an
 * IFF_MULTI_QUEUE interface, and each further call attaches one more; the kernel spreads
 * what it sends out of the interface over the queues by flow.
 */
export function tapOpen(name: string, multiQueue = false): number {
  const fd = c.open('/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC) as number;
  if (fd < 0) fail('open', '/dev/net/tun');
  const req = ifreq(name);
  new DataView(req.buffer).setUint16(IFNAMSIZ, IFF_TAP | IFF_NO_PI | (multiQueue ? IFF_MULTI_QUEUE : 0), true);
  if ((c.ioctl(fd, TUNSETIFF, req) as number) < 0) {
    const errno = koffi.errno();
    c.close(fd);
    throw new SysError('ioctl', errno, `TUNSETIFF ${name}`);
  }
  return fd;
}

const SIOCGIFMTU = 0x8921;

/** One interface ioctl (SIOC[GS]IF*) on `req`, an ifreq, through a socket of its own in this thread's network namespace. */
function interfaceIoctl(request: number, req: Uint8Array, what: string): void {
  const sock = c.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number;
  if (sock < 0) fail('socket', 'AF_INET');
  try {
    if ((c.ioctl(sock, request, req) as number) < 0) fail('ioctl', what);
  } finally {
    c.close(sock);
  }
}

/** An interface's MTU (SIOCGIFMTU), in this thread's network namespace. */
export function interfaceMtu(name: string): number {
  const req = ifreq(name);
  interfaceIoctl(SIOCGIFMTU, req, `SIOCGIFMTU ${name}`);
  return new DataView(req.buffer).getInt32(IFNAMSIZ, true);
}

/** Sets an interface's MTU (SIOCSIFMTU), in this thread's network namespace. */
export function setInterfaceMtu(name: string, mtu: number): void {
  const req = ifreq(name);
  new DataView(req.buffer).setInt32(IFNAMSIZ, mtu, true);
  interfaceIoctl(SIOCSIFMTU, req, `SIOCSIFMTU ${name} ${mtu}`);
}

/**
 * Whether a TAP fd still has its interface, wherever it has moved: a deleted one (`ip link
 * del`, or its network namespace gone) leaves the fd detached, and TUNGETIFF fails (EBADFD).
 */
export function tapAttached(fd: number): boolean {
  return (c.ioctl(fd, TUNGETIFF, new Uint8Array(IFREQ_BYTES)) as number) >= 0;
}

/**
 * Sets the MTU of the TAP interface behind `fd`, wherever the host has moved it and whatever
 * it has renamed it to: the fd gives its name (TUNGETIFF) and its network namespace
 * (TUNGETDEVNETNS, Linux 5.2). The interface stays, with its addresses and routes. Returns
 * the interface's name.
 */
export function setTapMtu(fd: number, mtu: number): string {
  const req = new Uint8Array(IFREQ_BYTES);
  if ((c.ioctl(fd, TUNGETIFF, req) as number) < 0) fail('ioctl', `TUNGETIFF fd ${fd}`);
  const end = req.indexOf(0);
  const name = new TextDecoder().decode(req.subarray(0, end >= 0 && end < IFNAMSIZ ? end : IFNAMSIZ));
  const netns = c.ioctlValue(fd, TUNGETDEVNETNS, 0) as number;
  if (netns < 0) fail('ioctl', `TUNGETDEVNETNS ${name}`);
  try {
    inNetworkNamespaceOf(netns, `of ${name}`, () => setInterfaceMtu(name, mtu));
  } finally {
    c.close(netns);
  }
  return name;
}

/** Brings an interface up (SIOCSIFFLAGS), with `mtu` set first if given (SIOCSIFMTU), in this thread's network namespace. */
export function interfaceUp(name: string, mtu?: number): void {
  if (mtu !== undefined) setInterfaceMtu(name, mtu);
  const req = ifreq(name);
  const dv = new DataView(req.buffer);
  interfaceIoctl(SIOCGIFFLAGS, req, `SIOCGIFFLAGS ${name}`);
  dv.setUint16(IFNAMSIZ, dv.getUint16(IFNAMSIZ, true) | IFF_UP, true);
  interfaceIoctl(SIOCSIFFLAGS, req, `SIOCSIFFLAGS ${name}`);
}

const SIOCSIFHWADDR = 0x8924;
const ARPHRD_ETHER = 1;

/** Sets an interface's MAC ("52:54:00:12:34:56"; SIOCSIFHWADDR), in this thread's network namespace. The interface must be down. */
export function setInterfaceMac(name: string, mac: string): void {
  const req = ifreq(name);
  // the union holds a struct sockaddr: family, then the address
  new DataView(req.buffer).setUint16(IFNAMSIZ, ARPHRD_ETHER, true);
  req.set(mac.split(':').map((x) => parseInt(x, 16)), IFNAMSIZ + 2);
  interfaceIoctl(SIOCSIFHWADDR, req, `SIOCSIFHWADDR ${name} ${mac}`);
}

const CLONE_NEWNET = 0x40000000;
/** where `ip netns add` keeps the namespaces it names */
export const NETNS_DIR = '/run/netns';

/**
 * Runs `fn` with this thread in the network namespace `name` (as `ip netns` names it), then
 * back in its own, even if `fn` throws. Sockets and interfaces made meanwhile belong to
 * that namespace for good: a socket stays in the one it was made in.
 */
export function inNetworkNamespace<T>(name: string, fn: () => T): T {
  const target = c.open(`${NETNS_DIR}/${name}`, O_RDONLY | O_CLOEXEC) as number;
  if (target < 0) fail('open', `${NETNS_DIR}/${name}: no network namespace of that name`);
  try {
    return inNetworkNamespaceOf(target, name, fn);
  } finally {
    c.close(target);
  }
}

/** inNetworkNamespace for the namespace an fd refers to; `what` names it in errors. */
function inNetworkNamespaceOf<T>(target: number, what: string, fn: () => T): T {
  const own = c.open('/proc/thread-self/ns/net', O_RDONLY | O_CLOEXEC) as number;
  if (own < 0) fail('open', '/proc/thread-self/ns/net');
  try {
    if ((c.setns(target, CLONE_NEWNET) as number) < 0) fail('setns', what);
    try {
      return fn();
    } finally {
      // A thread left in the wrong namespace would make every later socket there: abort.
      if ((c.setns(own, CLONE_NEWNET) as number) < 0) {
        process.stderr.write(`setns back from network namespace ${what} failed (errno ${koffi.errno()})\n`);
        process.abort();
      }
    }
  } finally {
    c.close(own);
  }
}

// A frame's read or write goes through one struct iovec in native memory, which the caller
// fills with the frame's address and length (frameIovec): a read or write given the
// address as a number would take it, past 2^31 for any mapping, as a heap number, an
// allocation a frame. This thread's own (a module is loaded once a thread).
const frameIovecMemory = koffi.alloc('uint64_t', 2);
/** The struct iovec of readFrame() and writeFrame(), as 32-bit words: base (low, high), length (low, high). */
export const frameIovec = new Uint32Array(koffi.view(frameIovecMemory, 16)).fill(0);
/** One read into frameIovec's buffer: its length, or -1 (EAGAIN, or errno in lastErrno()). Never throws. */
export function readFrame(fd: number): number {
  return c.readv(fd, frameIovecMemory, 1) as number;
}
/** One write of frameIovec's buffer: bytes written, or -1. Never throws. */
export function writeFrame(fd: number): number {
  return c.writev(fd, frameIovecMemory, 1) as number;
}

/** errno of the last failed call on this thread. */
export const lastErrno = (): number => koffi.errno();

// ---- AF_PACKET rings -------------------------------------------------------------------------

const ETH_P_ALL_BE = 0x0300; // htons(ETH_P_ALL)
const SOL_PACKET = 263;
const PACKET_ADD_MEMBERSHIP = 1;
const PACKET_RX_RING = 5;
const PACKET_VERSION = 10;
const PACKET_TX_RING = 13;
const PACKET_STATISTICS = 6;
const PACKET_IGNORE_OUTGOING = 23;
const PACKET_LOSS = 14;
const PACKET_FANOUT = 18;
const PACKET_FANOUT_HASH = 0;
/** the group's PACKET_IGNORE_OUTGOING: a fanout group's hook ignores the sockets' own flag */
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000;
const TPACKET_V3 = 2;
const PACKET_MR_PROMISC = 1;
const SO_ATTACH_FILTER = 26;
const PACKET_OUTGOING = 4;

/**
 * A classic BPF program that drops the frames the kernel marks outgoing (skb->pkt_type,
 * the SKF_AD_PKTTYPE load) and keeps the rest whole: {code, jt, jf, k} each.
 */
const DROP_OUTGOING_PROGRAM: readonly (readonly [number, number, number, number])[] = [
  [0x20, 0, 0, 0xfffff000 + 4], // ld [SKF_AD_OFF + SKF_AD_PKTTYPE]
  [0x15, 0, 1, PACKET_OUTGOING], // jeq #PACKET_OUTGOING, next, skip one
  [0x06, 0, 0, 0], // ret #0: dropped
  [0x06, 0, 0, 0xffffffff], // ret #-1: the whole frame
];

/**
 * Attaches DROP_OUTGOING_PROGRAM to AF_PACKET socket fd: it then receives none of the frames
 * going out of its interface, on any kernel. PACKET_IGNORE_OUTGOING does that for one socket
 * (Linux 4.20), but a fanout group's hook ignores its sockets' flags and has its own
 * (PACKET_FANOUT_FLAG_IGNORE_OUTGOING) only on recent kernels, which older ones take and
 * ignore; a socket's filter runs on whatever the group hands it.
 */
export function dropOutgoing(fd: number): void {
  // struct sock_fprog (the instruction count, then, aligned, the program's address) and the
  // program after it, in one buffer of shared memory: it never moves, and it lives through
  // the call that passes it, as what the kernel reads by address then does.
  const bytes = new Uint8Array(new SharedArrayBuffer(16 + DROP_OUTGOING_PROGRAM.length * 8));
  const dv = new DataView(bytes.buffer);
  DROP_OUTGOING_PROGRAM.forEach(([code, jt, jf, k], i) => {
    dv.setUint16(16 + i * 8, code, true);
    dv.setUint8(16 + i * 8 + 2, jt);
    dv.setUint8(16 + i * 8 + 3, jf);
    dv.setUint32(16 + i * 8 + 4, k, true);
  });
  dv.setUint16(0, DROP_OUTGOING_PROGRAM.length, true);
  dv.setBigUint64(8, BigInt(addressOf(bytes) + 16), true);
  if ((c.setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, bytes, 16) as number) < 0) fail('setsockopt', 'SO_ATTACH_FILTER (outgoing frames dropped)');
}

/** The shape of an AF_PACKET socket's rings (TPACKET_V3): the receive ring, then the transmit ring, in one mapping. */
export interface PacketRingShape {
  blockBytes: number;
  rxBlocks: number;
  txBlocks: number;
  /** a transmit slot: its tpacket3_hdr, then the frame */
  txFrameBytes: number;
  /** ms after which the kernel hands over a receive block that is not full */
  retireMs: number;
}

function setIntOption(fd: number, option: number, value: number, what: string): void {
  const v = new Uint8Array(4);
  new DataView(v.buffer).setInt32(0, value, true);
  if ((c.setsockopt(fd, SOL_PACKET, option, v, 4) as number) < 0) fail('setsockopt', what);
}

function ringRequest(blockBytes: number, blocks: number, frameBytes: number, retireMs: number): Uint8Array {
  // struct tpacket_req3: block size, block count, frame size, frame count, retire timeout, priv size, features
  const req = new Uint8Array(28);
  const dv = new DataView(req.buffer);
  dv.setUint32(0, blockBytes, true);
  dv.setUint32(4, blocks, true);
  dv.setUint32(8, frameBytes, true);
  dv.setUint32(12, Math.floor(blockBytes / frameBytes) * blocks, true);
  dv.setUint32(16, retireMs, true);
  return req;
}

/** Makes interface `ifindex` promiscuous for as long as AF_PACKET socket fd lives (the kernel counts such holds). */
function addPromiscuous(fd: number, ifindex: number, name: string): void {
  // struct packet_mreq: ifindex, type, address length, address[8]
  const mreq = new Uint8Array(16);
  new DataView(mreq.buffer).setInt32(0, ifindex, true);
  new DataView(mreq.buffer).setUint16(4, PACKET_MR_PROMISC, true);
  if ((c.setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq, mreq.length) as number) < 0) fail('setsockopt', `PACKET_ADD_MEMBERSHIP promiscuous ${name}`);
}

/**
 * An fd that keeps interface `name` promiscuous while it is open: an AF_PACKET socket of
 * protocol 0, which receives nothing. For AF_XDP ports: a NIC's receive filter drops
 * frames to MACs not its own before its XDP program sees them (the router's, the guests').
 */
export function promiscuousHold(name: string): number {
  const ifindex = interfaceIndex(name);
  if (ifindex === 0) fail('if_nametoindex', name);
  const fd = c.socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail('socket', 'AF_PACKET');
  try {
    addPromiscuous(fd, ifindex, name);
  } catch (err) {
    c.close(fd);
    throw err;
  }
  return fd;
}

/**
 * An AF_PACKET socket on interface `name` with TPACKET_V3 receive and transmit rings, bound,
 * promiscuous, blind to the frames it sends itself: its fd, non-blocking. Map it with
 * mmapShared(fd, packetRingBytes(shape)). `fanout`: the id of a PACKET_FANOUT group (a
 * 16-bit number, per network namespace) the socket joins: the interface's frames are spread
 * over the group's sockets by flow hash, each flow to one socket. The kernel hashes a
 * fragment by its addresses and protocol alone (no ports: the flow dissector stops at a
 * fragment, the first too), so a datagram's fragments meet one socket. NB: not with
 * PACKET_FANOUT_FLAG_DEFRAG, which hands the socket the datagram reassembled, longer than
 * the MTU: a router forwards fragments as they come.
 */
export function packetSocket(name: string, shape: PacketRingShape, fanout: number | null = null): number {
  const ifindex = interfaceIndex(name);
  if (ifindex === 0) fail('if_nametoindex', name);
  // Protocol 0 until bound: no frame is queued before the rings exist.
  const fd = c.socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail('socket', 'AF_PACKET');
  try {
    setIntOption(fd, PACKET_VERSION, TPACKET_V3, 'PACKET_VERSION TPACKET_V3');
    // A frame the kernel refuses to send (longer than the interface's MTU allows) is skipped
    // and its slot given back. Without, the kernel marks it TP_STATUS_WRONG_FORMAT and stops
    // there: every frame after it waits until that slot is written again, a ring later.
    // (Before the rings: the kernel takes it only then.)
    setIntOption(fd, PACKET_LOSS, 1, 'PACKET_LOSS');
    const rx = ringRequest(shape.blockBytes, shape.rxBlocks, shape.txFrameBytes, shape.retireMs);
    if ((c.setsockopt(fd, SOL_PACKET, PACKET_RX_RING, rx, rx.length) as number) < 0) fail('setsockopt', 'PACKET_RX_RING');
    const tx = ringRequest(shape.blockBytes, shape.txBlocks, shape.txFrameBytes, 0);
    if ((c.setsockopt(fd, SOL_PACKET, PACKET_TX_RING, tx, tx.length) as number) < 0) fail('setsockopt', 'PACKET_TX_RING');
    setIntOption(fd, PACKET_IGNORE_OUTGOING, 1, 'PACKET_IGNORE_OUTGOING');
    dropOutgoing(fd);
    addPromiscuous(fd, ifindex, name);
    // struct sockaddr_ll: family, protocol (network order), ifindex, ...
    const sll = new Uint8Array(20);
    const dv = new DataView(sll.buffer);
    dv.setUint16(0, AF_PACKET, true);
    dv.setUint16(2, ETH_P_ALL_BE, true);
    dv.setInt32(4, ifindex, true);
    if ((c.bind(fd, sll, sll.length) as number) < 0) fail('bind', `AF_PACKET ${name}`);
    if (fanout !== null) setIntOption(fd, PACKET_FANOUT, (fanout & 0xffff) | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_IGNORE_OUTGOING) << 16), `PACKET_FANOUT group ${fanout & 0xffff}`);
  } catch (err) {
    c.close(fd);
    throw err;
  }
  return fd;
}

/** The index of the interface of that name in this thread's network namespace, or 0 if there is none. */
export function interfaceIndex(name: string): number {
  return c.if_nametoindex(name) as number;
}

/** Bytes of the mapping of a socket's two rings. */
export function packetRingBytes(shape: PacketRingShape): number {
  return shape.blockBytes * (shape.rxBlocks + shape.txBlocks);
}

// struct tpacket_stats_v3: tp_packets, tp_drops, tp_freeze_q_cnt (u32 each); read rarely, so
// one scratch buffer serves every caller of a thread.
const packetStats = new Uint8Array(12);
const packetStatsView = new DataView(packetStats.buffer);
const packetStatsLength = new Uint32Array(1);

/**
 * The frames the kernel dropped on a packet socket since the last call, for want of room in
 * its receive ring (PACKET_STATISTICS: reading it resets the count); 0 if it cannot be read.
 * Never throws: the data path calls it.
 */
export function packetRingDrops(fd: number): number {
  packetStatsLength[0] = packetStats.length;
  if ((c.getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, packetStats, packetStatsLength) as number) < 0) return 0;
  return packetStatsView.getUint32(4, true);
}

/**
 * Asks the kernel to send the transmit ring's pending frames; false if it refused for good
 * (the interface down or gone), not when it could not take them all (EAGAIN: its send
 * buffer full; ENOBUFS: a qdisc dropped one). Never throws.
 */
export function packetKick(fd: number): boolean {
  if ((c.sendto(fd, null, 0, MSG_DONTWAIT, null, 0) as number) >= 0) return true;
  const errno = koffi.errno();
  return errno === EAGAIN || errno === ENOBUFS;
}

// ---- for the modules of src/sys that bind calls of their own ----------------------------------

/** The socket calls, bound once, for sibling modules that make sockets of other kinds (netlink-socket.ts, xdp.ts). */
export const socketCalls = { socket: c.socket, bind: c.bind, connect: c.connect, setsockopt: c.setsockopt, getsockopt: c.getsockopt, sendto: c.sendto, mmap: c.mmap };

/** The loaded libc and the SysError thrower, for sibling modules with bindings of their own (netlink-socket.ts). */
export { libc, fail };
