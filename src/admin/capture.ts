// GET /ports/NAME/capture: a port's frames, both directions, as pcapng, each received frame
// with what every stage of the pipeline did to it (comments) and the verdict. The filter is
// a small part of tcpdump's language; the PMDs record into their rings, and this side
// drains them every few ms and writes the blocks to the response until the count, the time
// or the client runs out. One capture per port at a time; captures of different ports run
// side by side.
import type { ServerResponse } from 'node:http';
import { EGRESS_CONSUMED, EGRESS_DROP, EGRESS_FLOOD } from '../dataplane/egress-codes.ts';
import { CaptureControl, DIRECTION_IN, FAMILY_ARP, FAMILY_IPV4, FAMILY_IPV6, FILTER_ANY, SNAP_MAX, type CaptureFilter, type CaptureMemory, type CapturePrefix, type CaptureRecord } from '../dataplane/capture.ts';
import { parsePrefix } from '../pipeline/api.ts';
import { monotonicMs } from '../sys/monotonic.ts';
import { ApiError } from './http.ts';
import {
  DIRECTION_INBOUND, DIRECTION_OUTBOUND, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, enhancedPacket, interfaceDescription, interfaceStatistics, sectionHeader,
} from './pcapng.ts';

/** What a capture needs of the router: its capture memory and names for what records hold. */
export interface CaptureSource {
  memory: CaptureMemory;
  ports: string[];
  /** the pipeline's stages, by index */
  stages: string[];
  /** drop reason names, by code (EGRESS_DROP - egress) */
  dropReasons: string[];
}

export const CAPTURE_DEFAULTS = { count: 100, seconds: 10 };
export const CAPTURE_MAX = { count: 100_000, seconds: 3600 };
const SNAP_MIN = 64;
/** how often the rings are drained while a capture runs */
const DRAIN_MS = 5;
/** bytes a slow client may leave unread before records are dropped (counted) */
const MAX_UNREAD_BYTES = 4 << 20;

export const CAPTURE_QUERY = {
  count: `packets to capture, both directions together (default ${CAPTURE_DEFAULTS.count}, at most ${CAPTURE_MAX.count})`,
  seconds: `how long to capture (default ${CAPTURE_DEFAULTS.seconds}, at most ${CAPTURE_MAX.seconds})`,
  snap: `bytes kept of each frame (${SNAP_MIN} to ${SNAP_MAX}, default ${SNAP_MAX}: a whole 1500-byte-MTU frame)`,
  filter:
    'primitives joined by "and", which may be left out (tcpdump words): ip, ip6, arp, icmp, icmp6, tcp, udp, sctp, proto N, ' +
    'host ADDR, src [host] ADDR, dst [host] ADDR, net PREFIX, src net PREFIX, dst net PREFIX, port N, portrange N-M; ' +
    'e.g. "host 10.0.1.2 and udp port 53"',
};

const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, sctp: 132, icmp6: 58 };

/** Parses a filter expression; a mistake is a 400 naming the field "filter" and the word at fault. */
export function parseCaptureFilter(expression: string, snap = SNAP_MAX): CaptureFilter {
  const filter: CaptureFilter = { family: FILTER_ANY, protocol: -1, portLo: -1, portHi: -1, src: null, dst: null, host: null, snap };
  const bad = (message: string) => new ApiError(400, 'VR_INVALID', 'filter', message);
  const family = (f: number, why: string) => {
    if (filter.family !== FILTER_ANY && filter.family !== f) throw bad(`${why} contradicts an earlier word of the filter (one family per capture)`);
    filter.family = f;
  };
  const words = expression.trim().split(/\s+/).filter((w) => w !== '');
  let k = 0;
  const next = (after: string) => {
    if (k >= words.length) throw bad(`"${after}" needs a value after it`);
    return words[k++];
  };
  const prefix = (after: string, slot: 'src' | 'dst' | 'host') => {
    const value = next(after);
    let p;
    try {
      p = parsePrefix(value);
    } catch (err) {
      throw bad(`after "${after}": ${(err as Error).message}`);
    }
    if (filter[slot] !== null) throw bad(`"${after}" is given twice: one ${slot} address or prefix per capture`);
    family(p.family === 6 ? FAMILY_IPV6 : FAMILY_IPV4, `"${after} ${value}"`);
    filter[slot] = { family: p.family === 6 ? 6 : 4, bytes: p.bytes, length: p.length } satisfies CapturePrefix;
  };
  const protocol = (n: number, word: string) => {
    if (filter.protocol >= 0 && filter.protocol !== n) throw bad(`"${word}" contradicts an earlier protocol of the filter`);
    filter.protocol = n;
  };
  const portNumber = (text: string, after: string) => {
    if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw bad(`after "${after}": "${text}" is not a port number (0 to 65535)`);
    return Number(text);
  };
  let expectPrimitive = true;
  while (k < words.length) {
    const word = words[k++].toLowerCase();
    // "and" may be left out, as tcpdump's "udp port 53" means "udp and port 53".
    if (word === 'and' || word === '&&') {
      if (expectPrimitive) throw bad('"and" must stand between two primitives');
      expectPrimitive = true;
      continue;
    }
    if (word === 'or' || word === 'not' || word === '!' || word === '||' || word.startsWith('(')) throw bad(`"${word}": only "and" joins primitives (no "or", "not" or brackets)`);
    expectPrimitive = false;
    switch (word) {
      case 'ip': family(FAMILY_IPV4, '"ip"'); break;
      case 'ip6': family(FAMILY_IPV6, '"ip6"'); break;
      case 'arp': family(FAMILY_ARP, '"arp"'); break;
      case 'icmp': family(FAMILY_IPV4, '"icmp"'); protocol(1, word); break;
      case 'icmp6': family(FAMILY_IPV6, '"icmp6"'); protocol(58, word); break;
      case 'tcp': case 'udp': case 'sctp': protocol(PROTOCOLS[word], word); break;
      case 'proto': {
        const value = next('proto').toLowerCase();
        const n = PROTOCOLS[value] ?? (/^\d{1,3}$/.test(value) && Number(value) <= 255 ? Number(value) : -1);
        if (n < 0) throw bad(`after "proto": "${value}" is neither a protocol number (0 to 255) nor one of ${Object.keys(PROTOCOLS).join(', ')}`);
        protocol(n, `proto ${value}`);
        break;
      }
      case 'host': prefix('host', 'host'); break;
      case 'net': prefix('net', 'host'); break;
      case 'src': case 'dst': {
        const then = words[k]?.toLowerCase();
        if (then === 'host' || then === 'net') k++;
        else if (then === 'port' || then === 'portrange') throw bad(`"${word} ${then}": only "port" and "portrange" (either direction) are supported`);
        prefix(then === 'host' || then === 'net' ? `${word} ${then}` : word, word);
        break;
      }
      case 'port': case 'portrange': {
        if (filter.portLo >= 0) throw bad(`"${word}" is given twice: one port or range per capture`);
        const value = next(word);
        const [lo, hi] = word === 'port' ? [value, value] : value.split('-');
        if (hi === undefined) throw bad(`after "portrange": "${value}" is not a range such as 1024-2047`);
        filter.portLo = portNumber(lo, word);
        filter.portHi = portNumber(hi, word);
        if (filter.portLo > filter.portHi) throw bad(`after "portrange": ${value} ends before it starts`);
        break;
      }
      default:
        throw bad(`"${word}" is not a word of the filter (${CAPTURE_QUERY.filter})`);
    }
  }
  if (expectPrimitive && words.length > 0) throw bad('the filter ends with "and"');
  if (filter.family === FAMILY_ARP && (filter.protocol >= 0 || filter.portLo >= 0)) throw bad('"arp" has no protocol or ports');
  return filter;
}

function boundedNumber(query: URLSearchParams, name: string, fallback: number, min: number, max: number): number {
  const text = query.get(name);
  if (text === null || text === '') return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new ApiError(400, 'VR_INVALID', name, `must be a whole number from ${min} to ${max}`);
  return n;
}

interface Session {
  id: number;
  port: number;
  /** the port's name: another port may take its slot once it is removed */
  name: string;
  res: ServerResponse;
  limit: number;
  written: number;
  /** records dropped here: the client read too slowly */
  unread: number;
  /** the rings' drop count of the port when the capture started */
  dropsBefore: number;
  start: number;
  timer: NodeJS.Timeout;
  done: boolean;
  /** stops listening for the end of the client's connection */
  unlisten: () => void;
}

/** The captures of one admin endpoint: at most one per port, one drain timer for all. */
export class CaptureHub {
  private readonly source: () => CaptureSource;
  private control: CaptureControl | null = null;
  private readonly sessions = new Map<number, Session>();
  private drainTimer: NodeJS.Timeout | null = null;
  private nextId = 1;

  constructor(source: () => CaptureSource) {
    this.source = source;
  }

  /** Checks the request (400, 404, 409) and returns the function that streams the capture. */
  open(portName: string, query: URLSearchParams): (res: ServerResponse) => void {
    const source = this.source();
    const port = source.ports.indexOf(portName);
    if (port < 0) throw new ApiError(404, 'VR_NOT_FOUND', 'name', `no port named ${portName}`);
    const count = boundedNumber(query, 'count', CAPTURE_DEFAULTS.count, 1, CAPTURE_MAX.count);
    const seconds = boundedNumber(query, 'seconds', CAPTURE_DEFAULTS.seconds, 1, CAPTURE_MAX.seconds);
    const snap = boundedNumber(query, 'snap', SNAP_MAX, SNAP_MIN, SNAP_MAX);
    const filter = parseCaptureFilter(query.get('filter') ?? '', snap);
    if (this.sessions.has(port)) throw new ApiError(409, 'VR_BUSY', 'name', `a capture of port ${portName} is running: one at a time per port`);
    const control = (this.control ??= new CaptureControl(source.memory));
    // Taken now, before the response starts: a second request for the port gets the 409.
    const session: Session = { id: this.nextId++, port, name: portName, res: null as unknown as ServerResponse, limit: count, written: 0, unread: 0, dropsBefore: control.drops(port), start: Date.now(), timer: null as unknown as NodeJS.Timeout, done: false, unlisten: () => {} };
    this.sessions.set(port, session);
    return (res) => {
      session.res = res;
      res.writeHead(200, { 'content-type': 'application/x-pcapng', 'content-disposition': `attachment; filename="${portName}.pcapng"` });
      res.write(sectionHeader('vrouter'));
      res.write(interfaceDescription(portName, `vrouter port ${portName}${query.get('filter') ? `, filter: ${query.get('filter')}` : ''}`, snap));
      const gone = () => this.finish(session, 'the client went away');
      res.on('close', gone);
      session.timer = setTimeout(() => this.finish(session, `${seconds} s elapsed`), seconds * 1000).unref();
      control.start(port, session.id, filter);
      this.drainTimer ??= setInterval(() => this.drain(), DRAIN_MS).unref();
      // A request pipelined behind another waits for the connection with no socket of its
      // own, and Node never closes its response when the connection goes: the connection's
      // end ends the capture.
      const connection = res.req.socket;
      if (connection.destroyed) return gone();
      connection.once('close', gone);
      session.unlisten = () => connection.off('close', gone);
    };
  }

  /** Stops every capture (the endpoint closes). */
  close(): void {
    for (const s of [...this.sessions.values()]) this.finish(s, 'the router is stopping');
  }

  private drain(): void {
    // A port removed ends its capture, before any record of a port that took its slot; so
    // does one closed and opened again (a connection setting changed: its slot's capture
    // word was cleared while no PMD ran).
    const ports = this.source().ports;
    const control = this.control!;
    for (const s of [...this.sessions.values()]) {
      if (ports[s.port] !== s.name) this.finish(s, 'the port was removed', false);
      else if (s.res !== null && control.active(s.port) !== s.id) this.finish(s, 'the port was opened again (a setting that needs its frontend to reconnect changed)');
    }
    this.drainRings();
    for (const s of [...this.sessions.values()]) if (s.written >= s.limit) this.finish(s, `${s.limit} packets captured`);
  }

  /** What the rings hold, to the captures still running; the source looked up once. */
  private drainRings(): void {
    const source = this.source();
    const wallOffset = Date.now() - monotonicMs();
    this.control!.drain(
      (port, id) => this.wants(port, id),
      (record) => this.deliver(record, source, wallOffset),
    );
  }

  /** Whether a record is of a running capture with room for it (records of one that ended, still in a ring, are left out). */
  private wants(port: number, id: number): boolean {
    const session = this.sessions.get(port);
    if (session === undefined || session.id !== id || session.written >= session.limit) return false;
    if (session.res.writableLength > MAX_UNREAD_BYTES) {
      session.unread++;
      return false;
    }
    return true;
  }

  private deliver(record: CaptureRecord, source: CaptureSource, wallOffset: number): void {
    const session = this.sessions.get(record.port)!;
    session.res.write(enhancedPacket(this.packetBlock(record, source, wallOffset)));
    session.written++;
  }

  private packetBlock(record: CaptureRecord, source: CaptureSource, wallOffset: number) {
    const ingress = record.direction === DIRECTION_IN;
    return {
      interfaceId: 0,
      time: record.time > 0 ? record.time + wallOffset : Date.now(),
      frame: record.frame,
      originalLength: record.originalLength,
      direction: ingress ? DIRECTION_INBOUND : DIRECTION_OUTBOUND,
      comments: ingress ? traceComments(record, source) : [`written to port ${source.ports[record.port]} (pmd${record.pmd})`],
      verdict: ingress ? xdpVerdict(record.egress, record.port) : null,
    };
  }

  private finish(session: Session, why: string, deliverRest = true): void {
    if (session.done) return;
    session.done = true;
    clearTimeout(session.timer);
    session.unlisten();
    const control = this.control!;
    control.stop(session.port);
    // What the PMDs published before the stop still belongs to this capture.
    if (deliverRest) this.drainRings();
    this.sessions.delete(session.port);
    if (this.sessions.size === 0 && this.drainTimer !== null) {
      clearInterval(this.drainTimer);
      this.drainTimer = null;
    }
    const res = session.res;
    if (res === null || res.destroyed || res.writableEnded) return;
    const ringFull = control.dropsSince(session.port, session.dropsBefore);
    const lost = ringFull + session.unread;
    const end = Date.now();
    res.end(interfaceStatistics({
      interfaceId: 0,
      start: session.start,
      end,
      received: session.written + lost,
      dropped: lost,
      comments: [`capture ended: ${why}; ${session.written} packets written, ${ringFull} lost to a full capture ring, ${session.unread} to a slow reader (traffic was not affected)`],
    }));
  }
}

/** One comment per stage that did something to the packet, then the verdict. */
export function traceComments(record: CaptureRecord, source: CaptureSource): string[] {
  const lines: string[] = [];
  let egress = EGRESS_DROP - source.dropReasons.indexOf('no_destination');
  let mark = 0;
  for (const e of record.trace) {
    const stage = source.stages[e.stage] ?? `stage ${e.stage}`;
    const parts: string[] = [];
    if (e.text !== null) parts.push(e.text);
    else if (e.egress !== egress) parts.push(egressText(e.egress, source));
    if (e.mark !== mark) parts.push(`mark ${e.mark}`);
    lines.push(`${stage}: ${parts.length > 0 ? parts.join(', ') : 'no change'}`);
    egress = e.egress;
    mark = e.mark;
  }
  if (record.traceTruncated) lines.push('(trace truncated)');
  lines.push(`verdict: ${egressText(record.egress, source)}`);
  return lines;
}

function egressText(egress: number, source: CaptureSource): string {
  if (egress >= 0) return `to port ${source.ports[egress] ?? egress}`;
  if (egress === EGRESS_FLOOD) return 'flood';
  if (egress === EGRESS_CONSUMED) return 'consumed (kept by the stage, sent later)';
  return `dropped: ${source.dropReasons[EGRESS_DROP - egress] ?? `reason ${EGRESS_DROP - egress}`}`;
}

/** The final decision as an XDP action: drop, back out of the ingress port, to others, or kept. */
function xdpVerdict(egress: number, ingress: number): number {
  if (egress === EGRESS_CONSUMED) return XDP_PASS;
  if (egress <= EGRESS_DROP) return XDP_DROP;
  return egress === ingress ? XDP_TX : XDP_REDIRECT;
}
