// Packet capture in the data path: a control block in shared memory (per port, whether a
// capture runs and its filter) and one ring of fixed-size records per PMD, which the PMD
// fills and the supervisor drains. A record is one frame (up to SNAP_MAX bytes), its
// direction and, for frames received from a guest, what each stage decided for it. The
// PMD reads one word per port and burst while no capture runs; a full ring costs records
// (counted), never traffic.
import { performance } from 'node:perf_hooks'; // not the global: a getter Node runs, with a check, at every read
import { monotonicMs } from '../sys/monotonic.ts';
import { sharedBuffer } from '../sys/shared-arena.ts';
import type { Batch } from './batch.ts';
import type { PacketPool } from './packet-pool.ts';

// ---- the control block: CONTROL_WORDS Int32 words per port -----------------------------------

export const CONTROL_WORDS = 32;
/** the running capture's id, 0 when none; stored (Atomics) after the filter words */
export const C_ACTIVE = 0;
/** bytes of each frame kept, at most SNAP_MAX */
export const C_SNAP = 1;
/** FILTER_ANY, or the only family that matches (FAMILY_IPV4, FAMILY_IPV6, FAMILY_ARP) */
export const C_FAMILY = 2;
/** IP protocol (next header), or -1: any */
export const C_PROTOCOL = 3;
/** source or destination port within [lo, hi] (TCP, UDP, SCTP), or lo = -1: any */
export const C_PORT_LO = 4;
export const C_PORT_HI = 5;
/** three prefixes, each a length (-1: none), four address words (big-endian) and the family */
export const C_SRC = 6;
export const C_DST = 12;
/** either the source or the destination */
export const C_HOST = 18;

export const FILTER_ANY = 0;
export const FAMILY_IPV4 = 4;
export const FAMILY_IPV6 = 6;
export const FAMILY_ARP = 1;

// ---- a ring: index words, per-port drop counts, then the slots -------------------------------

/** Written by the producer (the PMD): slots [tail, head) hold records. */
const HEAD = 0;
/** Written by the consumer (the supervisor); its own cache line. */
const TAIL = 16;
/** Per port: records the PMD could not write, the ring being full (written by the PMD only). */
const DROPS = 32;

export const RING_SLOTS = 256;
export const SLOT_BYTES = 2048;
/** In each slot, Int32 words: */
const S_PORT = 0;
/** DIRECTION_IN or DIRECTION_OUT, and TRUNCATED_TRACE */
const S_FLAGS = 1;
const S_ID = 2;
const S_ORIGINAL_LENGTH = 3;
const S_CAPTURED_LENGTH = 4;
/** the batch.egress and batch.mark the stages left (received frames) */
const S_EGRESS = 5;
const S_MARK = 6;
const S_TRACE_BYTES = 7;
/** Float64 at word 8: CLOCK_MONOTONIC in ms (monotonicMs), with µs in the fraction */
const S_TIME = 8;
/** a record time beyond this (about 285 years of uptime) is not one a PMD wrote */
const MAX_RECORD_TIME = 2 ** 53 / 1000;
const S_PMD = 10;
/** The trace: entries of three words (stage | text length << 16, egress, mark) and the text, padded to 4. */
const TRACE_AT = 48;
const TRACE_MAX = 464;
const FRAME_AT = TRACE_AT + TRACE_MAX;
/** The most bytes of a frame a record keeps: a whole 1500-byte-MTU frame with a VLAN tag. */
export const SNAP_MAX = SLOT_BYTES - FRAME_AT;
/** the longest stage text kept */
const TEXT_MAX = 200;

export const DIRECTION_IN = 1;
export const DIRECTION_OUT = 2;
const TRUNCATED_TRACE = 4;

function ringHeaderBytes(portCount: number): number {
  return Math.ceil((4 * (DROPS + portCount)) / 64) * 64;
}

/** Where a ring keeps what, for tests that write into one as a faulty producer would: Int32 word indices, and a slot's byte offset. */
export const RING_LAYOUT = {
  head: HEAD,
  drops: DROPS,
  slot: (portCount: number, index: number) => ringHeaderBytes(portCount) + index * SLOT_BYTES,
  originalLength: S_ORIGINAL_LENGTH,
  traceBytes: S_TRACE_BYTES,
  /** a Float64 index within the slot (S_TIME / 2) */
  time: S_TIME >>> 1,
  traceAt: TRACE_AT,
};

export interface CaptureMemory {
  /** CONTROL_WORDS Int32 words per port */
  control: ArrayBufferLike;
  /** one ring per PMD */
  rings: ArrayBufferLike[];
  portCount: number;
}

export function createCaptureMemory(pmdCount: number, portCount: number): CaptureMemory {
  return {
    control: sharedBuffer(4 * CONTROL_WORDS * portCount),
    rings: Array.from({ length: pmdCount }, () => sharedBuffer(ringHeaderBytes(portCount) + RING_SLOTS * SLOT_BYTES)),
    portCount,
  };
}

/** A stage as capture sees it: an optional sentence about what it did to packet i. */
export interface DescribedStage {
  describe?(batch: Batch, i: number): string | null;
}

/**
 * The PMD's end: checks a port's word once per burst (Pmd, Egress) and, while a capture
 * runs on it, selects the packets the filter takes, copies them into the ring as received,
 * follows what each stage does to them, and publishes once per burst.
 */
export class CaptureWriter {
  /** the control block: C_ACTIVE of port p at p * CONTROL_WORDS (a plain load, once per burst) */
  readonly control: Int32Array;
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly times: Float64Array;
  private readonly header: number;
  private readonly pmd: number;
  /** CLOCK_MONOTONIC (ms) when this thread's performance.now() was 0 */
  private readonly clockBase: number;
  private head: number;
  /** the consumer's index as last loaded: reloaded only when the ring looks full */
  private tail: number;
  // The packets of the current burst being recorded: batch index, slot, previous decision.
  private readonly selected = new Int32Array(64);
  private readonly slotOf = new Int32Array(64);
  private readonly lastEgress = new Int32Array(64);
  private readonly lastMark = new Uint32Array(64);
  private selectedCount = 0;

  constructor(memory: CaptureMemory, pmd: number) {
    this.control = new Int32Array(memory.control);
    const ring = memory.rings[pmd];
    this.words = new Int32Array(ring);
    this.bytes = new Uint8Array(ring);
    this.times = new Float64Array(ring);
    this.header = ringHeaderBytes(memory.portCount);
    this.pmd = pmd;
    // Records carry the monotonic clock, which the supervisor turns into the wall clock
    // when it reads them: the wall clock may be stepped after this thread started.
    this.clockBase = monotonicMs() - performance.now();
    this.head = Atomics.load(this.words, HEAD);
    this.tail = Atomics.load(this.words, TAIL);
  }

  /**
   * A burst from `port`, whose capture word is set: takes a slot for each packet the filter
   * matches and copies the frame as received. Returns how many are recorded.
   */
  beginIngress(batch: Batch, port: number): number {
    // Acquire: the filter words were written before the id was stored.
    const id = Atomics.load(this.control, port * CONTROL_WORDS + C_ACTIVE);
    this.selectedCount = 0;
    if (id === 0) return 0;
    // The clock (tens of ns) is read once per burst, and only if a packet matches.
    let now = 0;
    const data = batch.data;
    for (let i = 0; i < batch.count && this.selectedCount < this.selected.length; i++) {
      const off = batch.offset(i);
      const len = batch.length(i);
      if (!this.matches(port, data, off, len)) continue;
      const slot = this.take(port);
      if (slot < 0) continue;
      if (now === 0) now = this.clockBase + performance.now();
      this.fill(slot, port, DIRECTION_IN, id, now, data, off, len);
      const k = this.selectedCount++;
      this.selected[k] = i;
      this.slotOf[k] = slot;
      this.lastEgress[k] = batch.egress[i];
      this.lastMark[k] = batch.mark[i];
    }
    return this.selectedCount;
  }

  /** After stage `s` ran on the burst: what it changed, and what it says, for each recorded packet. */
  afterStage(s: number, stage: DescribedStage, batch: Batch): void {
    for (let k = 0; k < this.selectedCount; k++) {
      const i = this.selected[k];
      const egress = batch.egress[i];
      const mark = batch.mark[i];
      const changed = egress !== this.lastEgress[k] || mark !== this.lastMark[k];
      // A packet dropped before this stage is left alone by it: nothing to say.
      if (!changed && batch.dropped(i)) continue;
      const text = stage.describe === undefined ? null : stage.describe(batch, i);
      if (text === '' && !changed) continue;
      this.appendTrace(this.slotOf[k], s, egress, mark, text);
      this.lastEgress[k] = egress;
      this.lastMark[k] = mark;
    }
  }

  /** After the last stage: the final decisions, and the records published. */
  endIngress(batch: Batch): void {
    const w = this.words;
    for (let k = 0; k < this.selectedCount; k++) {
      const base = this.slotOf[k] >>> 2;
      w[base + S_EGRESS] = batch.egress[this.selected[k]];
      w[base + S_MARK] = batch.mark[this.selected[k]] | 0;
    }
    this.selectedCount = 0;
    this.publish();
  }

  /** Frames about to be written into `port`'s guest, whose capture word is set. */
  egressBurst(port: number, pool: PacketPool, handles: Uint32Array, count: number): void {
    this.recordBurst(port, pool, handles, count, DIRECTION_OUT, port);
  }

  /**
   * Frames received on `port`, whose capture word is set, that go on to port `to` as they
   * are, past the stages: a parent's frames of VLAN port `to`, recorded tagged.
   */
  handedOn(port: number, pool: PacketPool, handles: Uint32Array, count: number, to: number): void {
    this.recordBurst(port, pool, handles, count, DIRECTION_IN, to);
  }

  /** Frames of `port` recorded as they are now, in `direction`, `egress` their decision. */
  private recordBurst(port: number, pool: PacketPool, handles: Uint32Array, count: number, direction: number, egress: number): void {
    const id = Atomics.load(this.control, port * CONTROL_WORDS + C_ACTIVE);
    if (id === 0) return;
    let now = 0;
    const data = pool.data;
    let taken = 0;
    for (let k = 0; k < count; k++) {
      const h = handles[k];
      const off = pool.frameOffset(h);
      const len = pool.length[h];
      if (!this.matches(port, data, off, len)) continue;
      const slot = this.take(port);
      if (slot < 0) continue;
      if (now === 0) now = this.clockBase + performance.now();
      this.fill(slot, port, direction, id, now, data, off, len);
      this.words[(slot >>> 2) + S_EGRESS] = egress;
      taken++;
    }
    if (taken > 0) this.publish();
  }

  /** Whether the frame passes the port's filter (the words as the supervisor wrote them). */
  private matches(port: number, d: Uint8Array, off: number, len: number): boolean {
    const c = this.control;
    const base = port * CONTROL_WORDS;
    const family = c[base + C_FAMILY];
    if (len < 14) return family === FILTER_ANY && c[base + C_PROTOCOL] < 0 && c[base + C_PORT_LO] < 0;
    let type = (d[off + 12] << 8) | d[off + 13];
    let l3 = off + 14;
    if (type === 0x8100 && len >= 18) {
      type = (d[off + 16] << 8) | d[off + 17];
      l3 = off + 18;
    }
    const end = off + len;
    if (type === 0x0800) {
      if (family !== FILTER_ANY && family !== FAMILY_IPV4) return false;
      if (l3 + 20 > end) return false;
      const src = read32(d, l3 + 12);
      const dst = read32(d, l3 + 16);
      if (!match4(c, base + C_SRC, src) || !match4(c, base + C_DST, dst)) return false;
      if (c[base + C_HOST] >= 0 && !match4(c, base + C_HOST, src) && !match4(c, base + C_HOST, dst)) return false;
      const protocol = d[l3 + 9];
      const wanted = c[base + C_PROTOCOL];
      if (wanted >= 0 && protocol !== wanted) return false;
      if (c[base + C_PORT_LO] < 0) return true;
      // Ports are in the first fragment only.
      if ((((d[l3 + 6] << 8) | d[l3 + 7]) & 0x1fff) !== 0) return false;
      return portsMatch(c, base, d, protocol, l3 + (d[l3] & 15) * 4, end);
    }
    if (type === 0x86dd) {
      if (family !== FILTER_ANY && family !== FAMILY_IPV6) return false;
      if (l3 + 40 > end) return false;
      if (!match6(c, base + C_SRC, d, l3 + 8) || !match6(c, base + C_DST, d, l3 + 24)) return false;
      if (c[base + C_HOST] >= 0 && !match6(c, base + C_HOST, d, l3 + 8) && !match6(c, base + C_HOST, d, l3 + 24)) return false;
      // The next header of the fixed header: extension headers are not walked.
      const protocol = d[l3 + 6];
      const wanted = c[base + C_PROTOCOL];
      if (wanted >= 0 && protocol !== wanted) return false;
      if (c[base + C_PORT_LO] < 0) return true;
      return portsMatch(c, base, d, protocol, l3 + 40, end);
    }
    if (family === FAMILY_ARP) return type === 0x0806;
    return family === FILTER_ANY && c[base + C_PROTOCOL] < 0 && c[base + C_PORT_LO] < 0 && c[base + C_SRC] < 0 && c[base + C_DST] < 0 && c[base + C_HOST] < 0;
  }

  /** A free slot's byte offset, or -1 (counted) when the ring is full. */
  private take(port: number): number {
    if (((this.head - this.tail) | 0) >= RING_SLOTS) {
      // Acquire: the consumer's reads of the slots it released are done.
      this.tail = Atomics.load(this.words, TAIL);
      if (((this.head - this.tail) | 0) >= RING_SLOTS) {
        this.words[DROPS + port]++;
        return -1;
      }
    }
    const slot = this.header + (this.head & (RING_SLOTS - 1)) * SLOT_BYTES;
    this.head = (this.head + 1) | 0;
    return slot;
  }

  private fill(slot: number, port: number, direction: number, id: number, now: number, data: Uint8Array, off: number, len: number): void {
    const w = this.words;
    const base = slot >>> 2;
    const snap = this.control[port * CONTROL_WORDS + C_SNAP];
    const captured = len < snap ? len : snap;
    w[base + S_PORT] = port;
    w[base + S_FLAGS] = direction;
    w[base + S_ID] = id;
    w[base + S_ORIGINAL_LENGTH] = len;
    w[base + S_CAPTURED_LENGTH] = captured;
    w[base + S_EGRESS] = 0;
    w[base + S_MARK] = 0;
    w[base + S_TRACE_BYTES] = 0;
    w[base + S_PMD] = this.pmd;
    this.times[(slot >>> 3) + (S_TIME >>> 1)] = now;
    const bytes = this.bytes;
    const to = slot + FRAME_AT;
    for (let k = 0; k < captured; k++) bytes[to + k] = data[off + k];
  }

  private appendTrace(slot: number, stage: number, egress: number, mark: number, text: string | null): void {
    const w = this.words;
    const base = slot >>> 2;
    const used = w[base + S_TRACE_BYTES];
    const length = text === null ? 0 : text.length < TEXT_MAX ? text.length : TEXT_MAX;
    const size = 12 + ((length + 3) & ~3);
    if (used + size > TRACE_MAX) {
      w[base + S_FLAGS] |= TRUNCATED_TRACE;
      return;
    }
    const at = slot + TRACE_AT + used;
    w[at >>> 2] = stage | (length << 16);
    w[(at >>> 2) + 1] = egress;
    w[(at >>> 2) + 2] = mark | 0;
    const bytes = this.bytes;
    // Text a stage writes is ASCII (addresses, names); anything else shows as '?'.
    for (let k = 0; k < length; k++) {
      const ch = text!.charCodeAt(k);
      bytes[at + 12 + k] = ch < 0x80 ? ch : 0x3f;
    }
    w[base + S_TRACE_BYTES] = used + size;
  }

  private publish(): void {
    // Release: the records' words are visible before the consumer sees the new head.
    Atomics.store(this.words, HEAD, this.head);
  }
}

function read32(d: Uint8Array, o: number): number {
  return ((d[o] << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3]) >>> 0;
}

/** Whether an IPv4 address is in the prefix at c[at] (length, then its first word), or there is none. */
function match4(c: Int32Array, at: number, address: number): boolean {
  const length = c[at];
  if (length < 0) return true;
  if (c[at + 5] !== FAMILY_IPV4) return false;
  const mask = length === 0 ? 0 : -1 << (32 - length);
  return ((address ^ c[at + 1]) & mask) === 0;
}

function match6(c: Int32Array, at: number, d: Uint8Array, address: number): boolean {
  let left = c[at];
  if (left < 0) return true;
  if (c[at + 5] !== FAMILY_IPV6) return false;
  for (let q = 0; q < 4 && left > 0; q++) {
    const mask = left >= 32 ? -1 : -1 << (32 - left);
    if (((read32(d, address + q * 4) ^ c[at + 1 + q]) & mask) !== 0) return false;
    left -= 32;
  }
  return true;
}

function portsMatch(c: Int32Array, base: number, d: Uint8Array, protocol: number, l4: number, end: number): boolean {
  if (protocol !== 6 && protocol !== 17 && protocol !== 132) return false;
  if (l4 + 4 > end) return false;
  const lo = c[base + C_PORT_LO];
  const hi = c[base + C_PORT_HI];
  const src = (d[l4] << 8) | d[l4 + 1];
  const dst = (d[l4 + 2] << 8) | d[l4 + 3];
  return (src >= lo && src <= hi) || (dst >= lo && dst <= hi);
}

// ---- the supervisor's end --------------------------------------------------------------------

/** A filter in the words the PMD reads (see the C_ constants). */
export interface CaptureFilter {
  family: number;
  protocol: number;
  portLo: number;
  portHi: number;
  src: CapturePrefix | null;
  dst: CapturePrefix | null;
  host: CapturePrefix | null;
  snap: number;
}

export interface CapturePrefix {
  family: 4 | 6;
  bytes: Uint8Array;
  length: number;
}

export interface TraceEntry {
  stage: number;
  egress: number;
  mark: number;
  text: string | null;
}

export interface CaptureRecord {
  port: number;
  pmd: number;
  direction: number;
  id: number;
  /** CLOCK_MONOTONIC in ms (monotonicMs), 0 if the record's was not a time */
  time: number;
  originalLength: number;
  frame: Uint8Array;
  egress: number;
  mark: number;
  trace: TraceEntry[];
  traceTruncated: boolean;
}

/**
 * The supervisor's end: starts and stops a port's capture (the filter, then the id) and
 * drains every PMD's ring. The only consumer of the rings.
 */
export class CaptureControl {
  private readonly control: Int32Array;
  private readonly rings: { words: Int32Array; bytes: Uint8Array; times: Float64Array; tail: number }[];
  private readonly header: number;

  constructor(memory: CaptureMemory) {
    this.control = new Int32Array(memory.control);
    this.header = ringHeaderBytes(memory.portCount);
    this.rings = memory.rings.map((r) => {
      const words = new Int32Array(r);
      return { words, bytes: new Uint8Array(r), times: new Float64Array(r), tail: Atomics.load(words, TAIL) };
    });
  }

  /** Sets the port's filter, then its id: the PMDs start recording at their next burst. */
  start(port: number, id: number, filter: CaptureFilter): void {
    const c = this.control;
    const base = port * CONTROL_WORDS;
    Atomics.store(c, base + C_ACTIVE, 0);
    c[base + C_SNAP] = Math.max(0, Math.min(SNAP_MAX, filter.snap));
    c[base + C_FAMILY] = filter.family;
    c[base + C_PROTOCOL] = filter.protocol;
    c[base + C_PORT_LO] = filter.portLo;
    c[base + C_PORT_HI] = filter.portHi;
    for (const [at, p] of [[C_SRC, filter.src], [C_DST, filter.dst], [C_HOST, filter.host]] as const) {
      c[base + at] = p === null ? -1 : p.length;
      for (let q = 0; q < 4; q++) c[base + at + 1 + q] = p !== null && q * 4 < p.bytes.length ? read32(p.bytes, q * 4) | 0 : 0;
      c[base + at + 5] = p === null ? 0 : p.family;
    }
    // Release: the filter words above are visible to a PMD that sees the id.
    Atomics.store(c, base + C_ACTIVE, id);
  }

  stop(port: number): void {
    Atomics.store(this.control, port * CONTROL_WORDS + C_ACTIVE, 0);
  }

  /** The id of the capture the PMDs record for the port: 0 once it was stopped (here, or by the port's slot closing). */
  active(port: number): number {
    return Atomics.load(this.control, port * CONTROL_WORDS + C_ACTIVE);
  }

  /**
   * Records a full ring cost the port so far, over every PMD, modulo 2^32: each ring's
   * count is a 32-bit word that wraps, so only differences of these mean anything (see
   * dropsSince).
   */
  drops(port: number): number {
    let n = 0;
    for (const r of this.rings) n += Atomics.load(r.words, DROPS + port) >>> 0;
    return n % 2 ** 32;
  }

  /** Records a full ring cost the port since drops() was `before`. */
  dropsSince(port: number, before: number): number {
    return (this.drops(port) - before + 2 ** 32) % 2 ** 32;
  }

  /**
   * Takes every record waiting in the rings, in each PMD's order. `wanted` (port, id) says
   * whether a record is still of a running capture: only those are read. The indices and
   * every field are the data plane's: a head that is not within RING_SLOTS ahead of the
   * tail (a bug there, or a data plane of another build) skips what the ring holds, counted
   * in `skipped`, rather than walking 2^32 slots.
   */
  drain(wanted: (port: number, id: number) => boolean, visit: (record: CaptureRecord) => void): number {
    let n = 0;
    for (const r of this.rings) {
      // Acquire: the slots up to head were written before head was published.
      const head = Atomics.load(r.words, HEAD);
      const waiting = (head - r.tail) | 0;
      if (waiting < 0 || waiting > RING_SLOTS) {
        this.skipped++;
        r.tail = head;
      }
      while (r.tail !== head) {
        const slot = this.header + (r.tail & (RING_SLOTS - 1)) * SLOT_BYTES;
        const base = slot >>> 2;
        if (wanted(r.words[base + S_PORT], r.words[base + S_ID])) visit(this.read(r, slot));
        r.tail = (r.tail + 1) | 0;
        n++;
      }
      // Release: our reads of the slots are done before the PMD may reuse them.
      Atomics.store(r.words, TAIL, r.tail);
    }
    return n;
  }

  /** rings found with indices no producer could have left (see drain) */
  skipped = 0;

  private read(r: { words: Int32Array; bytes: Uint8Array; times: Float64Array }, slot: number): CaptureRecord {
    const w = r.words;
    const base = slot >>> 2;
    // Every length kept within the slot's own parts, whatever the words say.
    const captured = Math.min(SNAP_MAX, Math.max(0, w[base + S_CAPTURED_LENGTH]));
    const trace: TraceEntry[] = [];
    const used = Math.min(TRACE_MAX, w[base + S_TRACE_BYTES]);
    for (let at = 0; at + 12 <= used; ) {
      const word = (slot + TRACE_AT + at) >>> 2;
      const length = Math.min(w[word] >>> 16, used - at - 12);
      const start = slot + TRACE_AT + at + 12;
      trace.push({ stage: w[word] & 0xffff, egress: w[word + 1], mark: w[word + 2] >>> 0, text: length === 0 ? null : Buffer.from(r.bytes.subarray(start, start + length)).toString('latin1') });
      at += 12 + ((length + 3) & ~3);
    }
    const time = r.times[(slot >>> 3) + (S_TIME >>> 1)];
    return {
      port: w[base + S_PORT],
      pmd: w[base + S_PMD],
      direction: w[base + S_FLAGS] & 3,
      id: w[base + S_ID],
      time: time > 0 && time < MAX_RECORD_TIME ? time : 0,
      originalLength: Math.max(captured, w[base + S_ORIGINAL_LENGTH] >>> 0),
      frame: r.bytes.slice(slot + FRAME_AT, slot + FRAME_AT + captured),
      egress: w[base + S_EGRESS],
      mark: w[base + S_MARK] >>> 0,
      trace,
      traceTruncated: (w[base + S_FLAGS] & TRUNCATED_TRACE) !== 0,
    };
  }
}
