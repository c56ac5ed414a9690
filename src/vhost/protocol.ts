// The vhost-user wire format (QEMU docs/interop/vhost-user.rst): message header, request
// codes, protocol feature bits, and a validating decoder for each payload the backend takes.
// Quotes of the document, here and in the connection, are its words in the edition that
// names the sides front-end and back-end, with the section's title where it helps.

export const HEADER_LEN = 12;
/** Larger payloads are refused: the biggest message we take (SET_MEM_TABLE, 8 regions) is 264 bytes. */
export const MAX_PAYLOAD = 4096;

/** Header flags ("Header"): "Lower 2 bits are the version (currently 0x01)", "Bit 2 is the reply flag", "Bit 3 is the need_reply flag". */
export const VERSION = 0x1;
export const VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

const REQUEST_NAMES = new Map<number, string>(Object.entries(Req).map(([name, code]) => [code, name]));
export function requestName(code: number): string {
  return REQUEST_NAMES.get(code) ?? `request ${code}`;
}

/** Protocol feature bits (vhost-user.rst, "Protocol features"). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  BACKEND_REQ: 5,
  CONFIG: 9,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** SET_VRING_KICK, _CALL and _ERR: "Bits (0-7) of the payload contain the vring index. Bit 8 is the invalid FD flag." */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;
/** The regions of a memory table without CONFIGURE_MEM_SLOTS: "Memory regions description" has region0 to region7 (QEMU's VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEM_REGIONS = 8;
/**
 * GET_MAX_MEM_SLOTS: the regions a port may have in force once added one by one. A QEMU
 * guest needs one per RAM block (boot RAM below and above 4 GiB, each DIMM, each
 * virtio-mem memslot it plugs); 32 covers QEMU's default of 32 virtio-mem memslots or
 * many DIMMs, while keeping the PMD's table scan short (every guest address is looked up
 * in it) and the mappings a frontend can make vrouter hold bounded (each is also limited
 * by the port's 256 GiB and window budget).
 */
export const MAX_MEM_SLOTS = 32;

export interface Header {
  request: number;
  flags: number;
  size: number;
}

export function decodeHeader(bytes: Uint8Array): Header {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, HEADER_LEN);
  return { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
}

/** A reply: header with the reply flag, then the payload. */
export function encodeReply(request: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_LEN + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, VERSION | FLAG_REPLY, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, HEADER_LEN);
  return out;
}

export function u64Payload(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value, true);
  return out;
}

export function vringStatePayload(index: number, num: number): Uint8Array {
  const out = new Uint8Array(8);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, index, true);
  dv.setUint32(4, num, true);
  return out;
}

/** A payload that does not fit its request: the connection's frontend is at fault. */
export class ProtocolError extends Error {
  readonly code = 'VHOST_PROTOCOL';
}

function expectSize(p: Uint8Array, size: number, what: string): DataView {
  if (p.length !== size) throw new ProtocolError(`${what}: payload of ${p.length} bytes, expected ${size}`);
  return new DataView(p.buffer, p.byteOffset, p.length);
}

export function readU64(p: Uint8Array, what: string): bigint {
  return expectSize(p, 8, what).getBigUint64(0, true);
}

export interface VringState {
  index: number;
  num: number;
}
export function readVringState(p: Uint8Array, what: string): VringState {
  const dv = expectSize(p, 8, what);
  return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
}

export interface VringAddr {
  index: number;
  flags: number;
  descAddr: number;
  usedAddr: number;
  availAddr: number;
  logAddr: number;
}
/** "struct vhost_vring_addr": index, flags, descriptor, used, available, log (that order). */
export function readVringAddr(p: Uint8Array): VringAddr {
  const dv = expectSize(p, 40, 'SET_VRING_ADDR');
  const addr = (off: number) => {
    const v = dv.getBigUint64(off, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`SET_VRING_ADDR: address 0x${v.toString(16)} out of range`);
    return Number(v);
  };
  return { index: dv.getUint32(0, true), flags: dv.getUint32(4, true), descAddr: addr(8), usedAddr: addr(16), availAddr: addr(24), logAddr: addr(32) };
}

export interface MemRegionDesc {
  guestPhysAddr: number;
  size: number;
  userAddr: number;
  mmapOffset: number;
}
/** Regions are whole pages: mmap takes page-aligned offsets, and views of guest memory assume it. */
const REGION_ALIGN = 4096n;
const REGION_FIELDS = ['guest physical address', 'size', 'user address', 'mmap offset'] as const;

/**
 * One region at byte `o` of a payload: {guest address, size, user address, mmap offset},
 * each u64. Checks every sum for overflow, and that every field is a multiple of 4096 (QEMU
 * aligns its regions to the page size of the RAM behind them; DPDK's are hugepages or
 * whole pages of a memfd).
 */
function readRegion(dv: DataView, o: number, what: string): MemRegionDesc {
  const fields = [0, 8, 16, 24].map((f) => dv.getBigUint64(o + f, true));
  const [gpa, size, uva, offset] = fields;
  if (size === 0n) throw new ProtocolError(`${what} is empty`);
  const misaligned = fields.findIndex((v) => v % REGION_ALIGN !== 0n);
  if (misaligned >= 0) {
    throw new ProtocolError(`${what}: ${REGION_FIELDS[misaligned]} 0x${fields[misaligned].toString(16)} is not a multiple of ${REGION_ALIGN} (page-aligned regions only)`);
  }
  const limit = BigInt(Number.MAX_SAFE_INTEGER);
  if (gpa + size > limit || uva + size > limit || offset + size > limit) {
    throw new ProtocolError(`${what} (0x${gpa.toString(16)} +0x${size.toString(16)}) overflows`);
  }
  return { guestPhysAddr: Number(gpa), size: Number(size), userAddr: Number(uva), mmapOffset: Number(offset) };
}

/** The two regions share guest-physical addresses, or frontend addresses: which, or null. */
export function regionsOverlap(a: MemRegionDesc, b: MemRegionDesc): string | null {
  if (a.guestPhysAddr < b.guestPhysAddr + b.size && b.guestPhysAddr < a.guestPhysAddr + a.size) return 'guest physical addresses';
  if (a.userAddr < b.userAddr + b.size && b.userAddr < a.userAddr + a.size) return 'user addresses';
  return null;
}

/**
 * "Memory regions description": u32 count, u32 padding, then count regions. Only
 * guest-physical overlap is refused here, as before slots could be added one at a time.
 */
export function readMemTable(p: Uint8Array): MemRegionDesc[] {
  if (p.length < 8) throw new ProtocolError(`SET_MEM_TABLE: payload of ${p.length} bytes`);
  const dv = new DataView(p.buffer, p.byteOffset, p.length);
  const count = dv.getUint32(0, true);
  if (count < 1 || count > MAX_MEM_REGIONS) throw new ProtocolError(`SET_MEM_TABLE: ${count} regions (1..${MAX_MEM_REGIONS} supported)`);
  if (p.length !== 8 + 32 * count) throw new ProtocolError(`SET_MEM_TABLE: ${count} regions in ${p.length} bytes`);
  const regions = Array.from({ length: count }, (_, i) => readRegion(dv, 8 + 32 * i, `SET_MEM_TABLE: region ${i}`));
  for (let i = 0; i < regions.length; i++) {
    for (let j = i + 1; j < regions.length; j++) {
      if (regionsOverlap(regions[i], regions[j]) === 'guest physical addresses') throw new ProtocolError(`SET_MEM_TABLE: regions ${i} and ${j} overlap`);
    }
  }
  return regions;
}

/**
 * "Single memory region description": u64 padding, then one region (ADD_MEM_REG and
 * REM_MEM_REG). "The mmap offset is ignored" on removal: it is read as 0 there.
 */
export function readMemRegion(p: Uint8Array, what: 'ADD_MEM_REG' | 'REM_MEM_REG'): MemRegionDesc {
  expectSize(p, 40, what);
  const bytes = p.slice();
  if (what === 'REM_MEM_REG') bytes.fill(0, 32, 40);
  return readRegion(new DataView(bytes.buffer), 8, `${what}: the region`);
}

/**
 * "Inflight description" of GET_INFLIGHT_FD and SET_INFLIGHT_FD: mmap size and offset
 * (u64), number of queues and queue size (u16), padded to 24 bytes as the C struct is.
 */
export interface InflightDesc {
  mmapSize: number;
  mmapOffset: number;
  numQueues: number;
  queueSize: number;
}
export const INFLIGHT_DESC_LEN = 24;

export function readInflightDesc(p: Uint8Array, what: 'GET_INFLIGHT_FD' | 'SET_INFLIGHT_FD'): InflightDesc {
  const dv = expectSize(p, INFLIGHT_DESC_LEN, what);
  const size = dv.getBigUint64(0, true);
  const offset = dv.getBigUint64(8, true);
  const limit = BigInt(Number.MAX_SAFE_INTEGER);
  if (size + offset > limit) throw new ProtocolError(`${what}: mmap size 0x${size.toString(16)} at offset 0x${offset.toString(16)} overflows`);
  return { mmapSize: Number(size), mmapOffset: Number(offset), numQueues: dv.getUint16(16, true), queueSize: dv.getUint16(18, true) };
}

export function inflightDescPayload(d: InflightDesc): Uint8Array {
  const out = new Uint8Array(INFLIGHT_DESC_LEN);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(d.mmapSize), true);
  dv.setBigUint64(8, BigInt(d.mmapOffset), true);
  dv.setUint16(16, d.numQueues, true);
  dv.setUint16(18, d.queueSize, true);
  return out;
}
