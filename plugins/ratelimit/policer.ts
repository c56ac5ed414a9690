// Three-colour policers (RFC 2697 srTCM, RFC 2698 trTCM) whose state lives in a shared buffer,
// so that several PMD threads meter into the same policer and a restarted PMD finds it intact.
//
// Concurrency: each policer's state (configuration and buckets) is one immutable record, and one
// Int32 word says which record is current (record number in the low bits, a version above).
// A thread meters a whole burst against the current record with plain arithmetic, writes the
// result into a record of its own that nobody else reads yet, and publishes it with one
// Atomics.compareExchange on that word. If another thread published first, the exchange fails
// and the burst is metered again against the newer record. So a burst costs two Atomics (a load
// and a compareExchange), every token is spent exactly once, and no thread ever waits for
// another: a PMD preempted or terminated half-way through a burst holds nothing (a lock would
// stall the others for a scheduling quantum, or forever if its holder was terminated).
// Chunked token leasing was the alternative; it was not taken because leased tokens sit idle in
// one thread while another marks red, which splits the burst sizes the RFCs define.
// The version in the word (32 - log2(2 * threads) bits: 2^28 publishes with 4 threads) keeps a
// record that was replaced and then reused from passing for current (ABA): that would take a
// thread stalled between its load and its compareExchange for exactly a multiple of 2^28
// publishes, and would cost one burst metered against stale buckets.
//
// Arithmetic: bucket contents are whole bytes (or packets) held exactly in float64; the fraction
// of a token earned between two bursts is kept as `phase` in units of 1/8e6 byte (1/1e6 packet),
// so that a rate in bit/s (packet/s) is earned per microsecond as an integer. Every product stays
// below 2^53 (see `earn`), for any rate and any idle time.
import { performance } from 'node:perf_hooks'; // not the global: a getter Node runs, with a check, at every read
import { sharedBuffer } from '../../src/pipeline/api.ts';


export const GREEN = 0;
export const YELLOW = 1;
export const RED = 2;

export type PolicerConfig = SrTcmConfig | TrTcmConfig;

/** RFC 2697 single rate three colour marker. */
export interface SrTcmConfig {
  meter: 'srtcm';
  /** bytes: cir in bit/s, cbs and ebs in bytes of `lengths`; packets: cir in packet/s, bursts in packets */
  unit: 'bytes' | 'packets';
  cir: number;
  cbs: number;
  /** 0: no yellow, a two-colour policer */
  ebs: number;
}

/** RFC 2698 two rate three colour marker. */
export interface TrTcmConfig {
  meter: 'trtcm';
  unit: 'bytes' | 'packets';
  cir: number;
  cbs: number;
  pir: number;
  pbs: number;
}

export interface ColourCount {
  packets: number;
  bytes: number;
}

export interface PolicerCounters {
  green: ColourCount;
  yellow: ColourCount;
  red: ColourCount;
  /** bursts metered again because another thread published first (contention, not an error) */
  retries: number;
}

/** A policer's buckets as last published, for the admin side and tests. */
export interface PolicerState {
  config: PolicerConfig;
  /** Tc, in bytes or packets: below 0 while a packet longer than the bucket is paid back (meters below) */
  committed: number;
  /** Te (srTCM) or Tp (trTCM), the same */
  excessOrPeak: number;
  /** the time up to which tokens have been earned */
  lastUs: number;
}

export const POLICER_LIMITS = {
  maxThreads: 64,
  /** 1 Tbit/s; any rate stays exact, the bound only catches typing errors */
  maxBitRate: 1e12,
  maxPacketRate: 1e10,
  /** each of cbs, ebs, pbs: keeps (cbs + ebs + 1) * 8e6 below 2^53 */
  maxBurstBytes: 2 ** 28,
  maxBurstPackets: 2 ** 28,
} as const;

/** The control path's error: `code` survives postMessage, `field` names the key at fault. */
export class PolicerConfigError extends Error {
  readonly code = 'VR_CONFIG';
  readonly field: string;
  constructor(field: string, reason: string) {
    super(`${field}: ${reason}`);
    this.name = 'PolicerConfigError';
    this.field = field;
  }
}

const KEYS = {
  srtcm: ['meter', 'unit', 'cir', 'cbs', 'ebs'],
  trtcm: ['meter', 'unit', 'cir', 'cbs', 'pir', 'pbs'],
} as const;

/**
 * Checks a policer's configuration and fills its defaults (unit 'bytes', ebs 0).
 * `largestPacket` is the largest length the caller will meter, in bytes.
 */
export function validatePolicer(cfg: unknown, largestPacket = 1518): PolicerConfig {
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new PolicerConfigError('policer', 'must be an object');
  const obj = cfg as Record<string, unknown>;
  const meter = obj.meter;
  if (meter !== 'srtcm' && meter !== 'trtcm') throw new PolicerConfigError('meter', "must be 'srtcm' or 'trtcm'");
  for (const key of Object.keys(obj)) {
    if (!(KEYS[meter] as readonly string[]).includes(key)) throw new PolicerConfigError(key, `unknown key (${meter} takes ${KEYS[meter].join(', ')})`);
  }
  const unit = obj.unit ?? 'bytes';
  if (unit !== 'bytes' && unit !== 'packets') throw new PolicerConfigError('unit', "must be 'bytes' or 'packets'");
  const bytes = unit === 'bytes';
  const rateUnit = bytes ? 'bit/s' : 'packet/s';
  const maxRate = bytes ? POLICER_LIMITS.maxBitRate : POLICER_LIMITS.maxPacketRate;
  const burstUnit = bytes ? 'bytes' : 'packets';
  const maxBurst = bytes ? POLICER_LIMITS.maxBurstBytes : POLICER_LIMITS.maxBurstPackets;
  const largest = bytes ? largestPacket : 1;
  const largestText = bytes ? `the largest packet (${largestPacket} bytes)` : '1 packet';
  const integer = (field: string, min: number, max: number, minText: string, unitText: string): number => {
    const value = obj[field];
    if (value === undefined) throw new PolicerConfigError(field, 'is required');
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new PolicerConfigError(field, `must be a whole number of ${unitText}`);
    if (value < min) throw new PolicerConfigError(field, `must be at least ${minText}`);
    if (value > max) throw new PolicerConfigError(field, `must be at most ${max} ${unitText}`);
    return value;
  };
  const cir = integer('cir', 1, maxRate, `1 ${rateUnit}`, rateUnit);
  const cbs = integer('cbs', largest, maxBurst, largestText, burstUnit);
  if (meter === 'srtcm') {
    // RFC 2697, 2: "The CBS and EBS must be configured so that at least one of them is larger
    // than 0." A CBS below the largest packet would mark that packet yellow even on an idle link.
    const ebs = obj.ebs === undefined ? 0 : integer('ebs', 0, maxBurst, '0', burstUnit);
    if (ebs !== 0 && ebs < largest) throw new PolicerConfigError('ebs', `must be 0 (no yellow) or at least ${largestText}`);
    return { meter, unit, cir, cbs, ebs };
  }
  // RFC 2698, 2 requires PIR >= CIR.
  const pir = integer('pir', cir, maxRate, `cir (${cir} ${rateUnit})`, rateUnit);
  const pbs = integer('pbs', largest, maxBurst, largestText, burstUnit);
  return { meter, unit, cir, cbs, pir, pbs };
}

// --- Shared memory layout ---------------------------------------------------------------------
// header (64 B) | one 64-byte line per policer holding its current-record word | per policer and
// thread a 320-byte block: record A (128 B), record B (128 B), counters (64 B). Each thread writes
// only its own block, so its counters and the records it prepares share no line with another
// writer; the current-record words sit on lines of their own.

const MAGIC = 0x504f4c31; // "POL1"
const HEADER_BYTES = 64;
const LINE_BYTES = 64;
const BLOCK_F64 = 40;
const RECORD_F64 = 16;
const COUNTERS_F64 = 32;

// Record fields (float64 each).
const KIND = 0;
const UNIT = 1;
const CIR = 2;
const CBS = 3;
/** EBS (srTCM) or PBS (trTCM) */
const XBS = 4;
const PIR = 5;
const TC = 6;
/** Te (srTCM) or Tp (trTCM) */
const TX = 7;
const PHASE_C = 8;
const PHASE_P = 9;
const LAST_US = 10;
const CONFIG_FIELDS = 6; // KIND .. PIR

/** times are whole µs below 2^53; Date.now() * 1000 is 2^50.6 */
const MAX_TIME_US = 2 ** 53 - 1;
const KIND_SRTCM = 1;
const KIND_TRTCM = 2;
const UNIT_BYTES = 0;
const UNIT_PACKETS = 1;
/** phase units per byte: a rate in bit/s is earned per µs as an integer (bit/s = bytes/s * 8, per µs / 1e6) */
const SCALE_BYTES = 8e6;
/** phase units per packet: a rate in packet/s is earned per µs as an integer */
const SCALE_PACKETS = 1e6;

// Counter fields (float64 each) in a thread's block: colour * 2 is packets, + 1 bytes.
const RETRIES = 6;

// A burst's scratch, one Float64Array the meter functions share: the time it is metered at,
// and its tally as they leave it. Times travel in typed arrays, never as arguments: a double
// (a time in µs is past 2^31) passed to a function V8 did not inline is a new heap number at
// every call, an allocation per burst on the data path.
const BURST_NOW_US = 0;
const TALLY_GREEN_PACKETS = 1;
const TALLY_GREEN_BYTES = 2;
const TALLY_YELLOW_PACKETS = 3;
const TALLY_YELLOW_BYTES = 4;
const TALLY_BYTES = 5;
const BURST_F64 = 8;

/** Bytes of a table of `capacity` policers shared by `threads` threads. */
export function policerTableBytes(capacity: number, threads: number): number {
  return HEADER_BYTES + capacity * LINE_BYTES + capacity * threads * BLOCK_F64 * 8;
}

/**
 * The shared memory of `capacity` policers, metered into by up to `threads` threads: every thread
 * that meters or configures (the control thread too) takes a slot number below `threads`.
 */
export function createPolicerTable(capacity: number, threads: number): ArrayBufferLike {
  const buffer = sharedBuffer(policerTableBytes(capacity, threads));
  formatPolicerTable(buffer, capacity, threads);
  return buffer;
}

/**
 * Lays a table out in zero-filled shared memory allocated elsewhere (a plugin's region), of at
 * least policerTableBytes(capacity, threads). Its policers are not configured yet.
 */
export function formatPolicerTable(buffer: ArrayBufferLike, capacity: number, threads: number): void {
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 20) throw new RangeError(`policer table capacity ${capacity}: must be 1 to ${1 << 20}`);
  if (!Number.isInteger(threads) || threads < 1 || threads > POLICER_LIMITS.maxThreads) throw new RangeError(`policer table threads ${threads}: must be 1 to ${POLICER_LIMITS.maxThreads}`);
  if (buffer.byteLength < policerTableBytes(capacity, threads)) throw new RangeError(`policer table of ${capacity} policers for ${threads} threads: needs ${policerTableBytes(capacity, threads)} bytes, has ${buffer.byteLength}`);
  const header = new Int32Array(buffer, 0, 4);
  header[0] = MAGIC;
  header[1] = capacity;
  header[2] = threads;
}

/** Whether `buffer` holds a policer table (formatted, as opposed to zero-filled). */
export function isPolicerTable(buffer: ArrayBufferLike): boolean {
  return buffer.byteLength >= HEADER_BYTES && new Int32Array(buffer, 0, 1)[0] === MAGIC;
}

/** Microseconds on a clock all threads of the process share (Node 24: workers share the main thread's time origin). */
export function nowMicroseconds(): number {
  // timeOrigin + now: the same clock in every thread (a worker's performance.now() starts
  // at the worker's own start), as PMDs that share a policer must have.
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

/** One thread's view of a policer table: `thread` is its slot, used by no other live thread. */
export class PolicerTable {
  readonly capacity: number;
  readonly threads: number;
  readonly thread: number;
  private readonly words: Int32Array;
  private readonly f64: Float64Array;
  private readonly blocksAt: number;
  /** low bits of a current-record word: which of the 2 * threads records */
  private readonly recordBits: number;
  private readonly recordMask: number;
  /** colours of the burst being metered, copied out once published (colorsIn may be colorsOut) */
  private scratch = new Uint8Array(256);
  /**
   * time[0]: the time bursts are metered at and a bucket is refilled at, in integer microseconds
   * (see nowMicroseconds), written once per poll round (setTime, or a store into the cell the
   * table was built with: one store sets every table of a PMD). 0 until set.
   */
  readonly time: Float64Array;
  /** the burst's time and its green and yellow packets and bytes, and all its bytes (BURST_NOW_US, TALLY_*) */
  private readonly burst = new Float64Array(BURST_F64);
  /** packets of the last burst metered that were marked green, and yellow (red: meterBurst's result) */
  burstGreen = 0;
  burstYellow = 0;

  constructor(buffer: ArrayBufferLike, thread: number, time: Float64Array = new Float64Array(1)) {
    const header = new Int32Array(buffer, 0, 4);
    if (header[0] !== MAGIC) throw new RangeError('not a policer table (use createPolicerTable)');
    this.capacity = header[1];
    this.threads = header[2];
    if (!Number.isInteger(thread) || thread < 0 || thread >= this.threads) throw new RangeError(`thread slot ${thread}: the table has slots 0 to ${this.threads - 1}`);
    this.thread = thread;
    this.time = time;
    this.words = new Int32Array(buffer);
    this.f64 = new Float64Array(buffer);
    this.blocksAt = (HEADER_BYTES + this.capacity * LINE_BYTES) / 8;
    this.recordBits = Math.max(1, Math.ceil(Math.log2(2 * this.threads)));
    this.recordMask = (1 << this.recordBits) - 1;
  }

  /** Sets the time the next bursts are metered at (time[0]): integer microseconds. */
  setTime(nowUs: number): void {
    this.time[0] = nowUs;
  }

  /**
   * Meters a burst at the time set (time[0]) and writes each packet's colour into
   * colorsOut. colorsIn null: colour-blind; otherwise colour-aware with the colours the packets
   * arrived with (any value above RED counts as red; colorsIn may be colorsOut). Counts each
   * colour in this thread's counters. Returns the number of packets marked red. Never throws,
   * never allocates (after a first burst longer than 256).
   */
  meterBurst(policer: number, lengths: Uint32Array, count: number, colorsIn: Uint8Array | null, colorsOut: Uint8Array): number {
    count |= 0;
    if (count > lengths.length) count = lengths.length;
    if (count > colorsOut.length) count = colorsOut.length;
    if (colorsIn !== null && count > colorsIn.length) count = colorsIn.length;
    this.burstGreen = 0;
    this.burstYellow = 0;
    if (count <= 0) return 0;
    if (policer !== policer >>> 0 || policer >= this.capacity) {
      colorsOut.fill(GREEN, 0, count); // a policer that does not exist polices nothing
      this.burstGreen = count;
      this.burstYellow = 0;
      return 0;
    }
    if (count > this.scratch.length) this.scratch = new Uint8Array(count);
    const words = this.words;
    const f = this.f64;
    const scratch = this.scratch;
    const burst = this.burst;
    takeTime(this.time, burst);
    const at = HEADER_BYTES / 4 + policer * (LINE_BYTES / 4);
    const mine = this.thread * 2;
    let retries = 0;
    for (;;) {
      // Atomics.load: the plain reads of the record below must see the writes its publisher made
      // before its compareExchange (happens-before), not a stale cache of them.
      const current = Atomics.load(words, at);
      const currentRecord = current & this.recordMask;
      const src = this.recordAt(policer, currentRecord);
      // Never the current record: another thread may be reading it.
      const next = currentRecord === mine ? mine + 1 : mine;
      const dst = this.recordAt(policer, next);
      const kind = f[src + KIND];
      if (kind === KIND_SRTCM) {
        if (colorsIn === null) srTcmBlind(f, src, dst, burst, lengths, count, scratch);
        else srTcmAware(f, src, dst, burst, lengths, count, colorsIn, scratch);
      } else if (kind === KIND_TRTCM) {
        if (colorsIn === null) trTcmBlind(f, src, dst, burst, lengths, count, scratch);
        else trTcmAware(f, src, dst, burst, lengths, count, colorsIn, scratch);
      } else {
        // Not configured (or removed): police nothing. A second load shows the record was not
        // replaced while it was read.
        scratch.fill(GREEN, 0, count);
        tallyAllGreen(lengths, count, burst);
        if (Atomics.load(words, at) !== current) {
          retries++;
          continue;
        }
        break;
      }
      const published = (((current + (1 << this.recordBits)) & ~this.recordMask) | next) | 0;
      // compareExchange: publishes the burst only if no other thread published since the load
      // above; otherwise tokens would be spent twice, or a refill counted twice.
      if (Atomics.compareExchange(words, at, current, published) === current) break;
      retries++;
    }
    for (let i = 0; i < count; i++) colorsOut[i] = scratch[i];
    // Counted once per burst from registers: a read-modify-write per packet into the shared
    // counters cost 2 to 3 ns per packet.
    const counters = this.blockAt(policer, this.thread) + COUNTERS_F64;
    const red = count - burst[TALLY_GREEN_PACKETS] - burst[TALLY_YELLOW_PACKETS];
    this.burstGreen = burst[TALLY_GREEN_PACKETS];
    this.burstYellow = burst[TALLY_YELLOW_PACKETS];
    f[counters + 2 * GREEN] += burst[TALLY_GREEN_PACKETS];
    f[counters + 2 * GREEN + 1] += burst[TALLY_GREEN_BYTES];
    f[counters + 2 * YELLOW] += burst[TALLY_YELLOW_PACKETS];
    f[counters + 2 * YELLOW + 1] += burst[TALLY_YELLOW_BYTES];
    f[counters + 2 * RED] += red;
    f[counters + 2 * RED + 1] += burst[TALLY_BYTES] - burst[TALLY_GREEN_BYTES] - burst[TALLY_YELLOW_BYTES];
    if (retries > 0) f[counters + RETRIES] += retries;
    return red;
  }

  /**
   * Installs or changes a policer at time `nowUs`. A change that keeps the meter and unit keeps
   * the tokens (capped to the new burst sizes); otherwise the buckets start full (RFC 2697, 3 and
   * RFC 2698, 3: "The token buckets ... are initially (at time 0) full").
   */
  configure(policer: number, cfg: PolicerConfig, nowUs: number): void {
    this.checkIndex(policer);
    if (!Number.isSafeInteger(nowUs) || nowUs < 0) throw new RangeError(`time ${nowUs}: must be whole microseconds, 0 to 2^53 - 1`);
    const kind = cfg.meter === 'srtcm' ? KIND_SRTCM : KIND_TRTCM;
    const unit = cfg.unit === 'packets' ? UNIT_PACKETS : UNIT_BYTES;
    const xbs = cfg.meter === 'srtcm' ? cfg.ebs : cfg.pbs;
    const pir = cfg.meter === 'srtcm' ? 0 : cfg.pir;
    const at = new Float64Array(BURST_F64);
    at[BURST_NOW_US] = nowUs;
    this.publish(policer, (f, src, dst) => {
      const keep = f[src + KIND] === kind && f[src + UNIT] === unit;
      if (keep) {
        // Bring the old buckets up to now with the old rates first.
        if (kind === KIND_SRTCM) refillSrTcm(f, src, dst, at);
        else refillTrTcm(f, src, dst, at);
      }
      f[dst + KIND] = kind;
      f[dst + UNIT] = unit;
      f[dst + CIR] = cfg.cir;
      f[dst + CBS] = cfg.cbs;
      f[dst + XBS] = xbs;
      f[dst + PIR] = pir;
      f[dst + TC] = keep ? Math.min(f[dst + TC], cfg.cbs) : cfg.cbs;
      f[dst + TX] = keep ? Math.min(f[dst + TX], xbs) : xbs;
      if (!keep) {
        f[dst + PHASE_C] = 0;
        f[dst + PHASE_P] = 0;
        f[dst + LAST_US] = nowUs;
      }
    });
  }

  /**
   * Starts a configured policer afresh at the time set (time[0]): buckets full, as a new one (a
   * bucket handed to another address). Configuration unchanged; no allocation, for use on the
   * data path.
   */
  refill(policer: number): void {
    if (policer !== policer >>> 0 || policer >= this.capacity) return;
    takeTime(this.time, this.burst);
    const nowUs = this.burst[BURST_NOW_US];
    const words = this.words;
    const f = this.f64;
    const at = HEADER_BYTES / 4 + policer * (LINE_BYTES / 4);
    const mine = this.thread * 2;
    for (;;) {
      const current = Atomics.load(words, at);
      const currentRecord = current & this.recordMask;
      const src = this.recordAt(policer, currentRecord);
      const next = currentRecord === mine ? mine + 1 : mine;
      const dst = this.recordAt(policer, next);
      for (let i = 0; i < CONFIG_FIELDS; i++) f[dst + i] = f[src + i];
      f[dst + TC] = f[src + CBS];
      f[dst + TX] = f[src + XBS];
      f[dst + PHASE_C] = 0;
      f[dst + PHASE_P] = 0;
      f[dst + LAST_US] = nowUs;
      const published = (((current + (1 << this.recordBits)) & ~this.recordMask) | next) | 0;
      // compareExchange: as in meterBurst, a burst another thread published meanwhile is not lost.
      if (Atomics.compareExchange(words, at, current, published) === current) return;
    }
  }

  /** Removes a policer: metering into it marks everything green until it is configured again. */
  remove(policer: number): void {
    this.checkIndex(policer);
    this.publish(policer, (f, _src, dst) => {
      for (let i = 0; i < RECORD_F64; i++) f[dst + i] = 0;
    });
  }

  /** The policer's state as last published, or null if it is not configured. */
  readState(policer: number): PolicerState | null {
    this.checkIndex(policer);
    for (;;) {
      const at = HEADER_BYTES / 4 + policer * (LINE_BYTES / 4);
      const current = Atomics.load(this.words, at);
      const r = this.recordAt(policer, current & this.recordMask);
      const f = this.f64;
      const kind = f[r + KIND];
      const unit = f[r + UNIT] === UNIT_PACKETS ? 'packets' : 'bytes';
      const config: PolicerConfig | null =
        kind === KIND_SRTCM ? { meter: 'srtcm', unit, cir: f[r + CIR], cbs: f[r + CBS], ebs: f[r + XBS] }
        : kind === KIND_TRTCM ? { meter: 'trtcm', unit, cir: f[r + CIR], cbs: f[r + CBS], pir: f[r + PIR], pbs: f[r + XBS] }
        : null;
      const state = config && { config, committed: f[r + TC], excessOrPeak: f[r + TX], lastUs: f[r + LAST_US] };
      if (Atomics.load(this.words, at) === current) return state; // not replaced while read
    }
  }

  /** Per-colour counts summed over all threads (each thread is the only writer of its own). */
  readCounters(policer: number): PolicerCounters {
    this.checkIndex(policer);
    const sum = (field: number): number => {
      let total = 0;
      for (let t = 0; t < this.threads; t++) total += this.f64[this.blockAt(policer, t) + COUNTERS_F64 + field];
      return total;
    };
    return {
      green: { packets: sum(2 * GREEN), bytes: sum(2 * GREEN + 1) },
      yellow: { packets: sum(2 * YELLOW), bytes: sum(2 * YELLOW + 1) },
      red: { packets: sum(2 * RED), bytes: sum(2 * RED + 1) },
      retries: sum(RETRIES),
    };
  }

  /** Control path: prepares this thread's free record from the current one and publishes it. */
  private publish(policer: number, prepare: (f: Float64Array, src: number, dst: number) => void): void {
    const at = HEADER_BYTES / 4 + policer * (LINE_BYTES / 4);
    const mine = this.thread * 2;
    for (;;) {
      const current = Atomics.load(this.words, at);
      const currentRecord = current & this.recordMask;
      const next = currentRecord === mine ? mine + 1 : mine;
      const src = this.recordAt(policer, currentRecord);
      const dst = this.recordAt(policer, next);
      for (let i = 0; i < RECORD_F64; i++) this.f64[dst + i] = this.f64[src + i];
      prepare(this.f64, src, dst);
      const published = (((current + (1 << this.recordBits)) & ~this.recordMask) | next) | 0;
      // compareExchange: as in meterBurst, a PMD's burst published meanwhile is not overwritten.
      if (Atomics.compareExchange(this.words, at, current, published) === current) return;
    }
  }

  private checkIndex(policer: number): void {
    if (!Number.isInteger(policer) || policer < 0 || policer >= this.capacity) throw new RangeError(`policer ${policer}: the table holds 0 to ${this.capacity - 1}`);
  }

  private blockAt(policer: number, thread: number): number {
    return this.blocksAt + (policer * this.threads + thread) * BLOCK_F64;
  }

  private recordAt(policer: number, record: number): number {
    return this.blockAt(policer, record >> 1) + (record & 1) * RECORD_F64;
  }
}

/** The time set (time[0]) as a burst's (burst[BURST_NOW_US]). */
function takeTime(time: Float64Array, burst: Float64Array): void {
  const nowUs = time[0];
  // Not a time (NaN, Infinity, negative): earn nothing rather than poison the phase for good.
  burst[BURST_NOW_US] = nowUs >= 0 && nowUs <= MAX_TIME_US ? nowUs : 0;
}

// --- Metering: one small function per meter and colour mode, chosen once per burst -------------
// Each reads the current record at `src` and writes the next one at `dst`; colours go to `out`.

/**
 * Whole tokens earned over `dt` µs at the rate at `rateAt` (phase units per µs), at most `room`,
 * starting from the fraction stored at `phaseFrom`; the fraction left over goes to `phaseTo`.
 * The rate is read here, not passed: past 2^31 bit/s it is not a small integer, and as an
 * argument it would be a new heap number whenever V8 does not inline this.
 */
function earn(f: Float64Array, phaseFrom: number, phaseTo: number, dt: number, rateAt: number, scale: number, room: number): number {
  const rate = f[rateAt];
  const phase = f[phaseFrom];
  const add = phase + dt * rate;
  // floor(add / scale), exact for a whole add below 2^53 (the division may round up to the
  // next integer: put right here). Written out, not called: `add` (past 2^31, no small
  // integer, from about 2 Gbit/s) would be a new heap number at every call V8 did not inline
  // (refillTrTcm earns twice a burst).
  let whole = Math.floor(add / scale);
  if (add - whole * scale < 0) whole--;
  if (add >= (room + 1) * scale) {
    // More than fills the bucket(s): what is left is the fraction. Below 2^53 add is exact
    // (this is every burst at a policer not exceeded); past it (an idle hour at 100 Gbit/s
    // is 3.6e20) the fraction comes from the remainders, each below 8e6: exact, but four
    // remainders of doubles, each a call out of line.
    f[phaseTo] = add <= Number.MAX_SAFE_INTEGER ? add - whole * scale : (phase + ((dt % scale) * (rate % scale)) % scale) % scale;
    return room;
  }
  // Here add < (room + 1) * scale <= (2^29 + 1) * 8e6 < 2^53: exact.
  f[phaseTo] = add - whole * scale;
  return whole;
}

/**
 * RFC 2697, 3: "the token counts Tc and Te are updated CIR times per second as follows:
 * If Tc is less than CBS, Tc is incremented by one, else if Te is less then EBS, Te is
 * incremented by one, else neither Tc nor Te is incremented."
 * Copies the configuration and writes the refilled Tc, Te, phase and time (burst[BURST_NOW_US])
 * into `dst`.
 */
function refillSrTcm(f: Float64Array, src: number, dst: number, burst: Float64Array): void {
  const nowUs = burst[BURST_NOW_US];
  for (let i = 0; i < CONFIG_FIELDS; i++) f[dst + i] = f[src + i];
  const cbs = f[src + CBS];
  const ebs = f[src + XBS];
  let tc = f[src + TC];
  let te = f[src + TX];
  const last = f[src + LAST_US];
  const dt = nowUs - last;
  f[dst + PHASE_P] = 0;
  if (dt > 0) {
    const scale = f[src + UNIT] === UNIT_BYTES ? SCALE_BYTES : SCALE_PACKETS;
    const tokens = earn(f, src + PHASE_C, dst + PHASE_C, dt, src + CIR, scale, cbs - tc + (ebs - te));
    const toC = Math.min(tokens, cbs - tc);
    tc += toC;
    te += tokens - toC;
    f[dst + LAST_US] = nowUs;
  } else {
    // A thread whose clock is behind the last publisher's earns nothing, and time never goes back.
    f[dst + PHASE_C] = f[src + PHASE_C];
    f[dst + LAST_US] = last;
  }
  f[dst + TC] = tc;
  f[dst + TX] = te;
}

/**
 * RFC 2698, 3: "the token count Tp is incremented by one PIR times per second up to PBS and the
 * token count Tc is incremented by one CIR times per second up to CBS."
 */
function refillTrTcm(f: Float64Array, src: number, dst: number, burst: Float64Array): void {
  const nowUs = burst[BURST_NOW_US];
  for (let i = 0; i < CONFIG_FIELDS; i++) f[dst + i] = f[src + i];
  let tc = f[src + TC];
  let tp = f[src + TX];
  const last = f[src + LAST_US];
  const dt = nowUs - last;
  if (dt > 0) {
    const scale = f[src + UNIT] === UNIT_BYTES ? SCALE_BYTES : SCALE_PACKETS;
    tc += earn(f, src + PHASE_C, dst + PHASE_C, dt, src + CIR, scale, f[src + CBS] - tc);
    tp += earn(f, src + PHASE_P, dst + PHASE_P, dt, src + PIR, scale, f[src + XBS] - tp);
    f[dst + LAST_US] = nowUs;
  } else {
    f[dst + PHASE_C] = f[src + PHASE_C];
    f[dst + PHASE_P] = f[src + PHASE_P];
    f[dst + LAST_US] = last;
  }
  f[dst + TC] = tc;
  f[dst + TX] = tp;
}

// A packet's size B in tokens is length * perByte + perPacket: (1, 0) counting bytes, (0, 1)
// counting packets, so one loop serves both without a branch. Each function also tallies the
// green and yellow packets and bytes, and all bytes, in locals.
//
// A packet longer than a bucket can hold (a guest's TCP super-frame, up to 64 KiB, or a jumbo
// frame, metered against a burst of a few KiB) would never find the tokens the RFCs ask for,
// and would be red whatever the rate: TCP through the policer would lose every super-frame
// where the same stream cut into segments passes at the rate. Such a packet takes a bucket
// that is full instead, which goes below 0 by the rest: the tokens it is short of are owed,
// and the rate earns them back before the bucket holds any packet again, so the rate over
// time is the same. A packet no longer than the bucket needs B tokens, as the RFCs say (an EBS of 0 is no
// bucket, Infinity below: no yellow). The second test runs only where the RFCs' fails.

function tallyAllGreen(lengths: Uint32Array, count: number, tally: Float64Array): void {
  let bytes = 0;
  for (let i = 0; i < count; i++) bytes += lengths[i];
  tally[TALLY_GREEN_PACKETS] = count;
  tally[TALLY_GREEN_BYTES] = bytes;
  tally[TALLY_YELLOW_PACKETS] = 0;
  tally[TALLY_YELLOW_BYTES] = 0;
  tally[TALLY_BYTES] = bytes;
}

function storeTally(tally: Float64Array, greenPackets: number, greenBytes: number, yellowPackets: number, yellowBytes: number, bytes: number): void {
  tally[TALLY_GREEN_PACKETS] = greenPackets;
  tally[TALLY_GREEN_BYTES] = greenBytes;
  tally[TALLY_YELLOW_PACKETS] = yellowPackets;
  tally[TALLY_YELLOW_BYTES] = yellowBytes;
  tally[TALLY_BYTES] = bytes;
}

/**
 * RFC 2697, 3, Color-Blind mode: "If Tc(t)-B >= 0, the packet is green and Tc is decremented by B
 * down to the minimum value of 0, else if Te(t)-B >= 0, the packets is yellow and Te is
 * decremented by B down to the minimum value of 0, else the packet is red and neither Tc nor Te
 * is decremented."
 */
function srTcmBlind(f: Float64Array, src: number, dst: number, burst: Float64Array, lengths: Uint32Array, count: number, out: Uint8Array): void {
  refillSrTcm(f, src, dst, burst);
  const perByte = f[dst + UNIT] === UNIT_BYTES ? 1 : 0;
  const perPacket = 1 - perByte;
  const cbs = f[dst + CBS];
  const ebs = f[dst + XBS] > 0 ? f[dst + XBS] : Infinity;
  let tc = f[dst + TC];
  let te = f[dst + TX];
  let greenPackets = 0;
  let greenBytes = 0;
  let yellowPackets = 0;
  let yellowBytes = 0;
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const length = lengths[i];
    const b = length * perByte + perPacket;
    bytes += length;
    if (tc - b >= 0 || (b > cbs && tc >= cbs)) {
      tc -= b;
      out[i] = GREEN;
      greenPackets++;
      greenBytes += length;
    } else if (te - b >= 0 || (b > ebs && te >= ebs)) {
      te -= b;
      out[i] = YELLOW;
      yellowPackets++;
      yellowBytes += length;
    } else {
      out[i] = RED;
    }
  }
  f[dst + TC] = tc;
  f[dst + TX] = te;
  storeTally(burst, greenPackets, greenBytes, yellowPackets, yellowBytes, bytes);
}

/**
 * RFC 2697, 3, Color-Aware mode: "If the packet has been precolored as green and Tc(t)-B >= 0, the
 * packet is green and Tc is decremented by B down to the minimum value of 0, else If the packet
 * has been precolored as green or yellow and if Te(t)-B >= 0, the packets is yellow and Te is
 * decremented by B down to the minimum value of 0, else the packet is red and neither Tc nor Te
 * is decremented."
 */
function srTcmAware(f: Float64Array, src: number, dst: number, burst: Float64Array, lengths: Uint32Array, count: number, colorsIn: Uint8Array, out: Uint8Array): void {
  refillSrTcm(f, src, dst, burst);
  const perByte = f[dst + UNIT] === UNIT_BYTES ? 1 : 0;
  const perPacket = 1 - perByte;
  const cbs = f[dst + CBS];
  const ebs = f[dst + XBS] > 0 ? f[dst + XBS] : Infinity;
  let tc = f[dst + TC];
  let te = f[dst + TX];
  let greenPackets = 0;
  let greenBytes = 0;
  let yellowPackets = 0;
  let yellowBytes = 0;
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const length = lengths[i];
    const b = length * perByte + perPacket;
    bytes += length;
    const pre = colorsIn[i];
    if (pre === GREEN && (tc - b >= 0 || (b > cbs && tc >= cbs))) {
      tc -= b;
      out[i] = GREEN;
      greenPackets++;
      greenBytes += length;
    } else if (pre <= YELLOW && (te - b >= 0 || (b > ebs && te >= ebs))) {
      te -= b;
      out[i] = YELLOW;
      yellowPackets++;
      yellowBytes += length;
    } else {
      out[i] = RED;
    }
  }
  f[dst + TC] = tc;
  f[dst + TX] = te;
  storeTally(burst, greenPackets, greenBytes, yellowPackets, yellowBytes, bytes);
}

/**
 * RFC 2698, 3, Color-Blind mode: "If Tp(t)-B < 0, the packet is red, else if Tc(t)-B < 0, the
 * packet is yellow and Tp is decremented by B, else the packet is green and both Tp and Tc are
 * decremented by B."
 */
function trTcmBlind(f: Float64Array, src: number, dst: number, burst: Float64Array, lengths: Uint32Array, count: number, out: Uint8Array): void {
  refillTrTcm(f, src, dst, burst);
  const perByte = f[dst + UNIT] === UNIT_BYTES ? 1 : 0;
  const perPacket = 1 - perByte;
  const cbs = f[dst + CBS];
  const pbs = f[dst + XBS];
  let tc = f[dst + TC];
  let tp = f[dst + TX];
  let greenPackets = 0;
  let greenBytes = 0;
  let yellowPackets = 0;
  let yellowBytes = 0;
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const length = lengths[i];
    const b = length * perByte + perPacket;
    bytes += length;
    if (tp - b < 0 && (b <= pbs || tp < pbs)) {
      out[i] = RED;
    } else if (tc - b < 0 && (b <= cbs || tc < cbs)) {
      tp -= b;
      out[i] = YELLOW;
      yellowPackets++;
      yellowBytes += length;
    } else {
      tp -= b;
      tc -= b;
      out[i] = GREEN;
      greenPackets++;
      greenBytes += length;
    }
  }
  f[dst + TC] = tc;
  f[dst + TX] = tp;
  storeTally(burst, greenPackets, greenBytes, yellowPackets, yellowBytes, bytes);
}

/**
 * RFC 2698, 3, Color-Aware mode: "If the packet has been precolored as red or if Tp(t)-B < 0, the
 * packet is red, else if the packet has been precolored as yellow or if Tc(t)-B < 0, the packet
 * is yellow and Tp is decremented by B, else the packet is green and both Tp and Tc are
 * decremented by B."
 */
function trTcmAware(f: Float64Array, src: number, dst: number, burst: Float64Array, lengths: Uint32Array, count: number, colorsIn: Uint8Array, out: Uint8Array): void {
  refillTrTcm(f, src, dst, burst);
  const perByte = f[dst + UNIT] === UNIT_BYTES ? 1 : 0;
  const perPacket = 1 - perByte;
  const cbs = f[dst + CBS];
  const pbs = f[dst + XBS];
  let tc = f[dst + TC];
  let tp = f[dst + TX];
  let greenPackets = 0;
  let greenBytes = 0;
  let yellowPackets = 0;
  let yellowBytes = 0;
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const length = lengths[i];
    const b = length * perByte + perPacket;
    bytes += length;
    const pre = colorsIn[i];
    if (pre >= RED || (tp - b < 0 && (b <= pbs || tp < pbs))) {
      out[i] = RED;
    } else if (pre === YELLOW || (tc - b < 0 && (b <= cbs || tc < cbs))) {
      tp -= b;
      out[i] = YELLOW;
      yellowPackets++;
      yellowBytes += length;
    } else {
      tp -= b;
      tc -= b;
      out[i] = GREEN;
      greenPackets++;
      greenBytes += length;
    }
  }
  f[dst + TC] = tc;
  f[dst + TX] = tp;
  storeTally(burst, greenPackets, greenBytes, yellowPackets, yellowBytes, bytes);
}
