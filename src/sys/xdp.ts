// AF_XDP sockets through plain system calls (setsockopt, getsockopt, mmap), not libxdp:
// xsk_socket__create maps the rings and binds in the one process that calls it, and libxdp
// leaves its program attached if that process dies. Here the supervisor makes and binds the
// socket, and the data plane maps its rings (Linux allows that after bind: checked on 6.18);
// the program that steers frames to the sockets is xdp-steering.ts. The UMEM is a memfd: the
// supervisor registers it (XDP_UMEM_REG pins its pages), the data plane maps the same file
// and so sees the same pages.
//
// Layouts (linux/if_xdp.h), little-endian: struct xdp_umem_reg {u64 addr, u64 len, u32
// chunk_size, u32 headroom, u32 flags, u32 tx_metadata_len}; struct sockaddr_xdp {u16
// family, u16 flags, u32 ifindex, u32 queue_id, u32 shared_umem_fd}; struct
// xdp_mmap_offsets {rx, tx, fr, cr: {u64 producer, consumer, desc, flags}}; struct
// xdp_desc {u64 addr, u32 len, u32 options}; fill and completion entries are u64 addresses.
import koffi from 'koffi';
import { closeAll, fail, ftruncate, interfaceIndex, memfdCreate, mmapShared, munmap, sealAgainstShrinking, socketCalls as c, SysError } from './libc.ts';
import { AF_XDP, EAGAIN, EBUSY, EINVAL, ENOBUFS, MAP_FAILED, MAP_SHARED, MSG_DONTWAIT, PROT_READ, PROT_WRITE, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_RAW } from './linux-constants.ts';

const SOL_XDP = 283;
const XDP_MMAP_OFFSETS = 1;
const XDP_RX_RING = 2;
const XDP_TX_RING = 3;
const XDP_UMEM_REG = 4;
const XDP_UMEM_FILL_RING = 5;
const XDP_UMEM_COMPLETION_RING = 6;
const XDP_STATISTICS = 7;
/** sxdp_flags: copy mode (every driver has it), and kicks only when the kernel asks for them */
const XDP_COPY = 1 << 1;
const XDP_USE_NEED_WAKEUP = 1 << 3;
/** in a ring's flags word: the kernel acts on the ring only after a system call */
export const XDP_RING_NEED_WAKEUP = 1;
/** where the kernel puts a received frame in its chunk (XDP_PACKET_HEADROOM) */
export const XDP_PACKET_HEADROOM = 256;
const MAP_POPULATE = 0x8000;

/** Where a ring's words and descriptors sit in its mapping. */
export interface XdpRingOffsets {
  producer: number;
  consumer: number;
  flags: number;
  desc: number;
}

/**
 * An AF_XDP socket's UMEM and rings, as the data plane maps and reads them. UMEM chunks
 * [0, rxFrames) receive (the fill ring holds those the kernel may fill), chunks
 * [rxFrames, rxFrames + txSize) send: transmit slot i always uses chunk rxFrames + i.
 */
export interface XdpLayout {
  chunkBytes: number;
  /** receive chunks, as many as the fill ring holds: it always has room for all of them */
  rxFrames: number;
  /** entries of the rx and fill rings, and of the tx and completion rings (powers of two) */
  rxSize: number;
  txSize: number;
  umemBytes: number;
  rx: XdpRingOffsets;
  tx: XdpRingOffsets;
  fill: XdpRingOffsets;
  completion: XdpRingOffsets;
}

export type XdpRingName = 'rx' | 'tx' | 'fill' | 'completion';
export const XDP_RINGS: readonly XdpRingName[] = ['rx', 'tx', 'fill', 'completion'];

/** mmap offsets of the rings (XDP_PGOFF_RX_RING, XDP_PGOFF_TX_RING, XDP_UMEM_PGOFF_*). */
const RING_PAGE_OFFSET: Record<XdpRingName, number> = { rx: 0, tx: 0x80000000, fill: 0x100000000, completion: 0x180000000 };

/** Bytes of a ring's mapping: its words, then its entries (16-byte descriptors or 8-byte addresses). */
export function xdpRingBytes(layout: XdpLayout, ring: XdpRingName): number {
  const entries = ring === 'rx' || ring === 'fill' ? layout.rxSize : layout.txSize;
  return layout[ring].desc + entries * (ring === 'rx' || ring === 'tx' ? 16 : 8);
}

/** The size of an AF_XDP port's queue: frames up to maxFrame bytes, rxSize and txSize entries. */
export function xdpLayout(maxFrame: number, rxSize: number, txSize: number): Omit<XdpLayout, 'rx' | 'tx' | 'fill' | 'completion'> {
  // A chunk holds the kernel's headroom and the frame; 2048 and 4096 are the sizes that
  // need no unaligned-chunk mode on 4 KiB pages.
  const chunkBytes = XDP_PACKET_HEADROOM + maxFrame <= 2048 ? 2048 : 4096;
  if (XDP_PACKET_HEADROOM + maxFrame > chunkBytes) throw new Error(`frames of ${maxFrame} bytes do not fit an AF_XDP chunk (at most ${4096 - XDP_PACKET_HEADROOM} bytes: MTU ${4096 - XDP_PACKET_HEADROOM - 18})`);
  return { chunkBytes, rxFrames: rxSize, rxSize, txSize, umemBytes: (rxSize + txSize) * chunkBytes };
}

/** An AF_XDP socket bound to one queue of an interface: its fd, its UMEM's memfd and the layout. */
export interface XdpSocket {
  fd: number;
  umemFd: number;
  layout: XdpLayout;
}

/**
 * Maps `bytes` of one of an AF_XDP socket's rings (its words and entries), shared. Any
 * process holding the fd may, before or after bind.
 */
export function mmapXdpRing(fd: number, ring: XdpRingName, bytes: number): bigint {
  const addr = c.mmap(null, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, RING_PAGE_OFFSET[ring]) as bigint;
  if (addr === MAP_FAILED || addr === 0n) fail('mmap', `AF_XDP ${ring} ring, ${bytes} bytes`);
  return addr;
}

function setOption(fd: number, option: number, value: Uint8Array, what: string): void {
  if ((c.setsockopt(fd, SOL_XDP, option, value, value.length) as number) < 0) fail('setsockopt', what);
}

function setRingSize(fd: number, option: number, entries: number, what: string): void {
  const v = new Uint8Array(4);
  new DataView(v.buffer).setUint32(0, entries, true);
  setOption(fd, option, v, `${what} ${entries}`);
}

function ringOffsets(fd: number): Pick<XdpLayout, XdpRingName> {
  const buf = new Uint8Array(128);
  const len = new Uint32Array([buf.length]);
  if ((c.getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, buf, len) as number) < 0) fail('getsockopt', 'XDP_MMAP_OFFSETS');
  const dv = new DataView(buf.buffer);
  const at = (ring: number): XdpRingOffsets => {
    const word = (field: number) => Number(dv.getBigUint64(ring * 32 + field * 8, true));
    return { producer: word(0), consumer: word(1), desc: word(2), flags: word(3) };
  };
  return { rx: at(0), tx: at(1), fill: at(2), completion: at(3) };
}

/**
 * An AF_XDP socket on queue `queue` of interface `name`, in copy mode, with its UMEM (a
 * memfd, sealed against shrinking: the data plane maps it) registered, its four rings, and
 * its fill ring already holding every receive chunk. Throws, with the reason in words, if
 * the interface has no such queue or another socket holds it.
 */
export function xdpSocket(name: string, queue: number, size: ReturnType<typeof xdpLayout>): XdpSocket {
  const ifindex = interfaceIndex(name);
  if (ifindex === 0) fail('if_nametoindex', name);
  const fd = c.socket(AF_XDP, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail('socket', 'AF_XDP');
  let umemFd = -1;
  try {
    umemFd = memfdCreate(`vrouter-umem-${name}-${queue}`);
    ftruncate(umemFd, size.umemBytes);
    sealAgainstShrinking(umemFd);
    // XDP_UMEM_REG pins the pages behind the address given: the memfd's, which the data
    // plane maps too. The kernel keeps them pinned; this mapping is no longer needed.
    const umem = mmapShared(umemFd, size.umemBytes);
    try {
      const reg = new Uint8Array(32);
      const dv = new DataView(reg.buffer);
      dv.setBigUint64(0, umem, true);
      dv.setBigUint64(8, BigInt(size.umemBytes), true);
      dv.setUint32(16, size.chunkBytes, true);
      setOption(fd, XDP_UMEM_REG, reg, `XDP_UMEM_REG ${size.umemBytes} bytes`);
    } finally {
      munmap(umem, size.umemBytes);
    }
    setRingSize(fd, XDP_UMEM_FILL_RING, size.rxSize, 'XDP_UMEM_FILL_RING');
    setRingSize(fd, XDP_UMEM_COMPLETION_RING, size.txSize, 'XDP_UMEM_COMPLETION_RING');
    setRingSize(fd, XDP_RX_RING, size.rxSize, 'XDP_RX_RING');
    setRingSize(fd, XDP_TX_RING, size.txSize, 'XDP_TX_RING');
    const layout: XdpLayout = { ...size, ...ringOffsets(fd) };
    primeFillRing(fd, layout);
    const sxdp = new Uint8Array(16);
    const sv = new DataView(sxdp.buffer);
    sv.setUint16(0, AF_XDP, true);
    sv.setUint16(2, XDP_COPY | XDP_USE_NEED_WAKEUP, true);
    sv.setUint32(4, ifindex, true);
    sv.setUint32(8, queue, true);
    if (!bindRetrying(fd, sxdp)) {
      const errno = koffi.errno();
      if (errno === EINVAL && queue > 0) throw new SysError('bind', errno, `AF_XDP ${name} queue ${queue}: the interface has fewer queues than "queues" asks for`);
      if (errno === EBUSY) throw new SysError('bind', errno, `AF_XDP ${name} queue ${queue}: another AF_XDP socket holds that queue`);
      fail('bind', `AF_XDP ${name} queue ${queue}`);
    }
    return { fd, umemFd, layout };
  } catch (err) {
    closeAll([fd, umemFd]);
    throw err;
  }
}

/** how long a bind waits for the queue's previous socket to be let go of, in steps of BIND_RETRY_MS */
const BIND_RETRIES = 50;
const BIND_RETRY_MS = 10;
const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * Binds, waiting up to half a second while the queue is still held (EBUSY): a port reopened
 * (a new MTU) closes its old socket just before, and Linux lets go of it only once the
 * data plane has unmapped its rings, and then from a work queue. False, with errno set, if
 * it cannot.
 */
function bindRetrying(fd: number, sxdp: Uint8Array): boolean {
  for (let attempt = 0; ; attempt++) {
    if ((c.bind(fd, sxdp, sxdp.length) as number) === 0) return true;
    if (koffi.errno() !== EBUSY || attempt === BIND_RETRIES) return false;
    Atomics.wait(pause, 0, 0, BIND_RETRY_MS);
  }
}

/** Puts every receive chunk in the fill ring, before the socket is bound: the kernel has somewhere to write from the first frame. */
function primeFillRing(fd: number, layout: XdpLayout): void {
  const bytes = layout.fill.desc + layout.rxSize * 8;
  const addr = mmapXdpRing(fd, 'fill', bytes);
  try {
    const words = new Uint32Array(koffi.view(addr, bytes));
    const entries = layout.fill.desc >> 2;
    for (let i = 0; i < layout.rxFrames; i++) {
      words[entries + 2 * i] = i * layout.chunkBytes;
      words[entries + 2 * i + 1] = 0;
    }
    // Release: the entries are written before the kernel sees the producer move.
    Atomics.store(words, layout.fill.producer >> 2, layout.rxFrames);
  } finally {
    munmap(addr, bytes);
  }
}

// ---- the data path -----------------------------------------------------------------------------

/**
 * Has the kernel send what the transmit ring holds (copy mode sends only in a system
 * call); false if it refused for good (not EAGAIN/EBUSY/ENOBUFS: busy, try again). Never throws.
 */
export function xdpKick(fd: number): boolean {
  if ((c.sendto(fd, null, 0, MSG_DONTWAIT, null, 0) as number) >= 0) return true;
  const errno = koffi.errno();
  return errno === EAGAIN || errno === EBUSY || errno === ENOBUFS;
}

// struct xdp_statistics: rx_dropped, rx_invalid_descs, tx_invalid_descs, rx_ring_full,
// rx_fill_ring_empty_descs, tx_ring_empty_descs (u64 each); one scratch buffer per thread.
const stats = new Uint8Array(48);
const statsView = new DataView(stats.buffer);
const statsLength = new Uint32Array(1);

/**
 * The socket's counts since it was made, into `into`: [0] frames dropped on receipt for want
 * of room (the rx ring full, or the fill ring empty: no chunk to write into), [1] frames
 * dropped on receipt as too long for a chunk (the rest of rx_dropped, which counts both
 * kinds), [2] transmit descriptors refused. False if they cannot be read. Never throws:
 * the data path calls it.
 */
export function xdpDrops(fd: number, into: Float64Array): boolean {
  statsLength[0] = stats.length;
  if ((c.getsockopt(fd, SOL_XDP, XDP_STATISTICS, stats, statsLength) as number) < 0) return false;
  const rxDropped = Number(statsView.getBigUint64(0, true));
  const fillEmpty = Number(statsView.getBigUint64(32, true));
  into[0] = Number(statsView.getBigUint64(24, true)) + fillEmpty;
  into[1] = rxDropped > fillEmpty ? rxDropped - fillEmpty : 0;
  into[2] = Number(statsView.getBigUint64(16, true));
  return true;
}
