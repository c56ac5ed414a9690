// The pcapng blocks a capture is written in (draft-ietf-opsawg-pcapng-02): a Section Header,
// an Interface Description per port, Enhanced Packet Blocks with comments, direction flags
// and a verdict, and an Interface Statistics Block at the end. Little-endian, as the
// byte-order magic of the section says.

const SHB = 0x0a0d0d0a;
const IDB = 0x00000001;
const ISB = 0x00000005;
const EPB = 0x00000006;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
/** LINKTYPE_ETHERNET */
export const LINKTYPE_ETHERNET = 1;

const OPT_ENDOFOPT = 0;
/** opt_comment: UTF-8, may appear more than once */
const OPT_COMMENT = 1;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const IF_TSRESOL = 9;
/** epb_flags, 4 octets: bits 0-1 inbound (1) or outbound (2) */
const EPB_FLAGS = 2;
/** epb_verdict: one octet of verdict type, then the verdict */
const EPB_VERDICT = 7;
const ISB_STARTTIME = 2;
const ISB_ENDTIME = 3;
const ISB_IFRECV = 4;
const ISB_IFDROP = 5;

export const DIRECTION_INBOUND = 1;
export const DIRECTION_OUTBOUND = 2;
/** epb_verdict type 2, "Linux eBPF XDP": 8 octets holding the XDP action */
export const VERDICT_TYPE_XDP = 2;
/** The XDP actions (linux/bpf.h enum xdp_action) a verdict maps to. */
export const XDP_DROP = 1;
export const XDP_PASS = 2;
export const XDP_TX = 3;
export const XDP_REDIRECT = 4;

function option(code: number, value: Buffer): Buffer {
  const padded = (value.length + 3) & ~3;
  const b = Buffer.alloc(4 + padded);
  b.writeUInt16LE(code, 0);
  b.writeUInt16LE(value.length, 2);
  value.copy(b, 4);
  return b;
}

function options(list: Buffer[]): Buffer {
  return list.length === 0 ? Buffer.alloc(0) : Buffer.concat([...list, option(OPT_ENDOFOPT, Buffer.alloc(0))]);
}

function block(type: number, body: Buffer): Buffer {
  const total = 12 + body.length;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(total, 4);
  body.copy(b, 8);
  b.writeUInt32LE(total, total - 4);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

function u64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n), 0);
  return b;
}

/** A timestamp in µs (the default if_tsresol) as pcapng's high and low words. */
function timestamp(ms: number): Buffer {
  const us = BigInt(Math.max(0, Math.floor(ms * 1000)));
  const b = Buffer.alloc(8);
  b.writeUInt32LE(Number(us >> 32n), 0);
  b.writeUInt32LE(Number(us & 0xffffffffn), 4);
  return b;
}

const text = (s: string) => Buffer.from(s, 'utf8');

export function sectionHeader(application: string): Buffer {
  const body = Buffer.alloc(16);
  body.writeUInt32LE(BYTE_ORDER_MAGIC, 0);
  body.writeUInt16LE(1, 4);
  body.writeUInt16LE(0, 6);
  // Section length -1: not given (the file is streamed).
  body.writeBigInt64LE(-1n, 8);
  return block(SHB, Buffer.concat([body, options([option(SHB_USERAPPL, text(application))])]));
}

export function interfaceDescription(name: string, description: string, snapLength: number): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt16LE(LINKTYPE_ETHERNET, 0);
  body.writeUInt32LE(snapLength, 4);
  // if_tsresol 6: microseconds (the default, said for readers that want it said).
  return block(IDB, Buffer.concat([body, options([option(IF_NAME, text(name)), option(IF_DESCRIPTION, text(description)), option(IF_TSRESOL, Buffer.from([6]))])]));
}

export interface EnhancedPacket {
  interfaceId: number;
  /** ms since the epoch */
  time: number;
  frame: Uint8Array;
  originalLength: number;
  direction: number;
  comments: string[];
  /** an XDP action, or null for no verdict option */
  verdict: number | null;
}

export function enhancedPacket(p: EnhancedPacket): Buffer {
  const head = Buffer.alloc(20);
  head.writeUInt32LE(p.interfaceId, 0);
  timestamp(p.time).copy(head, 4);
  head.writeUInt32LE(p.frame.length, 12);
  head.writeUInt32LE(p.originalLength, 16);
  const data = Buffer.alloc((p.frame.length + 3) & ~3);
  data.set(p.frame);
  const opts = p.comments.map((c) => option(OPT_COMMENT, text(c)));
  opts.push(option(EPB_FLAGS, u32(p.direction)));
  if (p.verdict !== null) opts.push(option(EPB_VERDICT, Buffer.concat([Buffer.from([VERDICT_TYPE_XDP]), u64(p.verdict)])));
  return block(EPB, Buffer.concat([head, data, options(opts)]));
}

export interface InterfaceStatistics {
  interfaceId: number;
  start: number;
  end: number;
  /** packets the capture saw */
  received: number;
  /** packets the capture lost */
  dropped: number;
  comments: string[];
}

export function interfaceStatistics(s: InterfaceStatistics): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt32LE(s.interfaceId, 0);
  timestamp(s.end).copy(head, 4);
  const opts = [
    ...s.comments.map((c) => option(OPT_COMMENT, text(c))),
    option(ISB_STARTTIME, timestamp(s.start)),
    option(ISB_ENDTIME, timestamp(s.end)),
    option(ISB_IFRECV, u64(s.received)),
    option(ISB_IFDROP, u64(s.dropped)),
  ];
  return block(ISB, Buffer.concat([head, options(opts)]));
}
