// A server for FRR's Forwarding Plane Manager interface as zebra's dplane_fpm_nl module
// speaks it: zebra connects over TCP and sends each route (and nexthop group) it installs,
// or removes, as netlink messages, each batch in a frame of its own. On (re)connecting it
// sends its whole table again; it never says when that is done.
import { createServer, type Server, type Socket } from 'node:net';
import { createLog } from '../log.ts';
import { formatAddress, parseAddress } from '../pipeline/api.ts';
import { decodeMessages, isTableEvent, type MalformedEvent, type NetlinkEvent, type TableEvent } from '../sys/netlink.ts';
import type { Logger } from './netlink-watcher.ts';

/** FRR fpm/fpm.h: FPM_DEFAULT_PORT */
export const FPM_DEFAULT_PORT = 2620;
/**
 * FRR fpm/fpm.h, fpm_msg_hdr_t: "version" (u8, FPM_PROTO_VERSION 1), "msg_type" (u8,
 * FPM_MSG_TYPE_NETLINK 1, FPM_MSG_TYPE_PROTOBUF 2), "msg_len" ("Length of entire message,
 * including the header, in network byte order", u16). dplane_fpm_nl puts one or more
 * netlink messages in a frame (a route update is RTM_DELROUTE then RTM_NEWROUTE) and
 * asserts that a frame fits the u16, so frames are up to 65535 bytes: fpm.h's
 * FPM_MAX_MSG_LEN of 4096 belongs to the older fpm module.
 */
const FPM_HEADER_BYTES = 4;
const FPM_PROTO_VERSION = 1;
const FPM_MSG_TYPE_NETLINK = 1;
const FPM_MSG_TYPE_PROTOBUF = 2;
/** Idle time before a silent connection is probed (TCP keepalive). */
export const FPM_KEEPALIVE_IDLE_MS = 10_000;
/**
 * Connections kept at once: one zebra per namespace or VRF needs one each. Each costs the
 * supervisor a file descriptor, and those are the guests' sockets and memory files too.
 * When all are taken, a new connection takes the place of the oldest that has added no
 * route to the main table and no nexthop (zebra sends its table as soon as it connects: any
 * local process could otherwise hold every place, silent, sending empty frames or removals
 * of routes it never sent, and keep zebra out); with none such, it is closed.
 */
export const FPM_MAX_CONNECTIONS = 16;
/** The routing table route sources keep (RT_TABLE_MAIN). */
const MAIN_TABLE = 254;

/** One zebra connection; `id` tells apart the connections of one server. */
export interface FpmPeer {
  id: number;
  /** "address:port" */
  remote: string;
}

/**
 * 'sync-start' opens a connection: what follows is zebra's whole table, with no end
 * marked. 'disconnected' closes it: a consumer may keep the peer's routes for a grace
 * period, and sweep those the next connection has not sent again by its end.
 */
export type FpmEvent = TableEvent | { kind: 'sync-start' } | { kind: 'disconnected'; reason: string };

export interface FpmServerOptions {
  /** the address to listen on (FRR's default "fpm address" is 127.0.0.1) */
  host: string;
  /** 0: one the system picks (see listen()) */
  port: number;
  /** the addresses zebra may connect from (as formatAddress writes them); null or absent: any */
  peers?: readonly string[] | null;
  onEvents: (events: FpmEvent[], peer: FpmPeer) => void;
  /**
   * Whether what the connection sent holds anything now (its routes, as its consumer keeps
   * them): one that added and removed again holds nothing, and gives its place to a
   * newcomer as a silent one does. Absent: having added once is enough.
   */
  holds?: (peer: FpmPeer) => boolean;
  log?: Logger;
}

interface Connection {
  peer: FpmPeer;
  socket: Socket;
  /** what arrived of frames not complete yet, joined only once `needed` bytes are there (a frame sent byte by byte costs no copying per byte) */
  pending: Buffer[];
  pendingBytes: number;
  /** bytes that complete the first frame pending: its header, then its length */
  needed: number;
  /** bytes received before rest: where a bad frame starts, for the log */
  offset: number;
  /** it sent a route or nexthop: zebra's (or one as good as zebra's), never closed for a new connection */
  announced: boolean;
  closeReason: string | null;
}

export class FpmServer {
  private readonly options: FpmServerOptions;
  private readonly log: Logger;
  private server: Server | null = null;
  private readonly connections = new Set<Connection>();
  private nextId = 1;
  private readonly decoded: NetlinkEvent[] = [];
  private peersAllowed: ReadonlySet<string> | null;
  /** connections refused: from an address not in `peers`, or past FPM_MAX_CONNECTIONS */
  refused = 0;
  private refusalLogged = 0;
  /** silent connections closed to make room for a new one (see FPM_MAX_CONNECTIONS) */
  evicted = 0;
  private evictionLogged = 0;

  constructor(options: FpmServerOptions) {
    this.options = options;
    this.log = options.log ?? createLog('fpm');
    this.peersAllowed = options.peers == null ? null : new Set(options.peers);
  }

  /** Changes who may connect; open connections from others are closed. */
  allowPeers(peers: readonly string[] | null): void {
    this.peersAllowed = peers === null ? null : new Set(peers);
    for (const c of this.connections) if (!this.allowed(c.socket)) this.drop(c, `${c.socket.remoteAddress} is no longer in "peers"`, false);
  }

  private allowed(socket: Socket): boolean {
    if (this.peersAllowed === null) return true;
    let remote = socket.remoteAddress ?? '';
    // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6 addresses.
    if (remote.startsWith('::ffff:') && remote.includes('.')) remote = remote.slice(7);
    try {
      return this.peersAllowed.has(formatAddress(parseAddress(remote).bytes));
    } catch {
      return false;
    }
  }

  /** Listens; resolves with the address and port it listens on. */
  listen(): Promise<{ host: string; port: number }> {
    if (this.server !== null) return Promise.reject(new Error('the FPM server is already listening'));
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (err) => {
        // Not listening: listen() may be tried again (the address may be free later).
        if (this.server === server) this.server = null;
        reject(err);
      });
      server.listen(this.options.port, this.options.host, () => {
        // Closed while the listen was under way (close() no longer knows this server).
        if (this.server !== server) {
          server.close();
          reject(new Error('the FPM server was closed'));
          return;
        }
        server.removeAllListeners('error');
        server.on('error', (err) => this.log.warn(`fpm: ${err.message}`));
        const a = server.address();
        resolve(typeof a === 'object' && a !== null ? { host: a.address, port: a.port } : { host: this.options.host, port: this.options.port });
      });
    });
  }

  /** The connections open now. */
  get peers(): FpmPeer[] {
    return [...this.connections].map((c) => c.peer);
  }

  /** Stops listening and closes every connection (each gets its 'disconnected'). */
  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const c of this.connections) this.drop(c, 'the FPM server is closing', false);
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    const full = this.connections.size >= FPM_MAX_CONNECTIONS;
    const silent = full ? this.oldestSilent() : null;
    const why = !this.allowed(socket) ? 'not in "peers"' : full && silent === null ? `${FPM_MAX_CONNECTIONS} connections are open, the most kept, and each holds routes` : null;
    if (why !== null) {
      this.refused++;
      // At most one line in ten seconds: a scanner must not flood the log.
      const now = Date.now();
      if (now - this.refusalLogged >= 10_000) {
        this.refusalLogged = now;
        this.log.warn(`fpm: refused a connection from ${socket.remoteAddress}, ${why} (${this.refused} refused so far)`);
      }
      socket.destroy();
      return;
    }
    if (silent !== null) {
      this.drop(silent, `its place was given to a new connection from ${socket.remoteAddress}: all ${FPM_MAX_CONNECTIONS} were taken and it held no route`, false);
      this.connections.delete(silent);
      this.evicted++;
      const now = Date.now();
      if (now - this.evictionLogged >= 10_000) {
        this.evictionLogged = now;
        this.log.warn(`fpm: all ${FPM_MAX_CONNECTIONS} connections were taken: the oldest that held no route, from ${silent.peer.remote}, was closed for one from ${socket.remoteAddress} (${this.evicted} so far)`);
      }
    }
    const peer = { id: this.nextId++, remote: `${socket.remoteAddress}:${socket.remotePort}` };
    const c: Connection = { peer, socket, pending: [], pendingBytes: 0, needed: FPM_HEADER_BYTES, offset: 0, announced: false, closeReason: null };
    this.connections.add(c);
    this.log.info(`fpm: zebra connected from ${peer.remote}`);
    socket.setNoDelay(true);
    // zebra on a host that went down never closes: probes find it gone (libuv probes every
    // second, ten times), and its routes are withdrawn with the connection.
    socket.setKeepAlive(true, FPM_KEEPALIVE_IDLE_MS);
    socket.on('data', (chunk: Buffer) => this.receive(c, chunk));
    socket.on('error', (err) => {
      c.closeReason ??= err.message;
    });
    socket.on('close', () => {
      this.connections.delete(c);
      const reason = c.closeReason ?? 'the peer closed the connection';
      this.log.info(`fpm: connection from ${peer.remote} closed: ${reason}`);
      this.deliver([{ kind: 'disconnected', reason }], peer);
    });
    this.deliver([{ kind: 'sync-start' }], peer);
  }

  /** The connection open longest of those that have added no route or nexthop (addsToTable), or null. */
  private oldestSilent(): Connection | null {
    // A Set iterates in insertion order: the first found is the oldest.
    const holds = this.options.holds;
    for (const c of this.connections) if (c.closeReason === null && (!c.announced || (holds !== undefined && !holds(c.peer)))) return c;
    return null;
  }

  /** Takes the complete frames out of what arrived; a bad one closes the connection, after the events of those before it. */
  private receive(c: Connection, chunk: Buffer): void {
    if (c.closeReason !== null) return;
    c.pending.push(chunk);
    c.pendingBytes += chunk.length;
    if (c.pendingBytes < c.needed) return;
    const data = c.pending.length === 1 ? chunk : Buffer.concat(c.pending, c.pendingBytes);
    const events: FpmEvent[] = [];
    let o = 0;
    let problem: string | null = null;
    while (data.length - o >= FPM_HEADER_BYTES) {
      problem = frameProblem(data, o);
      if (problem !== null) break;
      const length = data.readUInt16BE(o + 2);
      if (data.length - o < length) break;
      this.decoded.length = 0;
      decodeMessages(data.subarray(o + FPM_HEADER_BYTES, o + length), this.decoded);
      // A frame is taken whole or not at all: half of an update (its RTM_DELROUTE without
      // the RTM_NEWROUTE) would remove a route zebra keeps.
      const bad = this.decoded.find((ev): ev is MalformedEvent => ev.kind === 'malformed');
      if (bad !== undefined) {
        problem = `bad netlink in the frame at byte ${c.offset + o}: ${bad.reason}`;
        break;
      }
      // zebra asks no questions: the control kinds (done, ack, overrun) mean nothing here.
      for (const ev of this.decoded) if (isTableEvent(ev)) events.push(ev);
      o += length;
    }
    // Copied: a subarray would keep the whole chunk alive for a few bytes.
    const rest = Buffer.from(data.subarray(o));
    c.pending = rest.length === 0 ? [] : [rest];
    c.pendingBytes = rest.length;
    c.needed = rest.length >= FPM_HEADER_BYTES ? Math.max(FPM_HEADER_BYTES, rest.readUInt16BE(2)) : FPM_HEADER_BYTES;
    c.offset += o;
    if (!c.announced) c.announced = events.some(addsToTable);
    this.deliver(events, c.peer);
    if (problem !== null) this.drop(c, problem);
  }

  private drop(c: Connection, reason: string, warn = true): void {
    if (c.closeReason !== null) return;
    c.closeReason = reason;
    if (warn) this.log.warn(`fpm: closing the connection from ${c.peer.remote}: ${reason}`);
    c.socket.destroy();
  }

  private deliver(events: FpmEvent[], peer: FpmPeer): void {
    if (events.length === 0) return;
    try {
      this.options.onEvents(events, peer);
    } catch (err) {
      this.log.warn(`fpm: the event handler threw: ${(err as Error).message}`);
    }
  }
}

/**
 * Whether an event can add to what the connection's routes hold: a route added to the main
 * table, or a nexthop object. Removals of routes it never sent, routes of other tables and
 * links hold nothing, and do not keep a connection's place.
 */
function addsToTable(e: FpmEvent): boolean {
  return e.kind === 'nexthop' ? e.op === 'add' : e.kind === 'route' && e.op === 'add' && e.table === MAIN_TABLE;
}

/** What is wrong with the FPM header at o, or null. */
function frameProblem(data: Buffer, o: number): string | null {
  const version = data[o];
  const type = data[o + 1];
  const length = data.readUInt16BE(o + 2);
  if (version !== FPM_PROTO_VERSION) return `FPM version ${version} (only ${FPM_PROTO_VERSION} is known)`;
  if (type === FPM_MSG_TYPE_PROTOBUF) return 'a protobuf FPM message: only netlink is read (FRR\'s dplane_fpm_nl module sends it)';
  if (type !== FPM_MSG_TYPE_NETLINK) return `FPM message type ${type} (${FPM_MSG_TYPE_NETLINK}, netlink, expected)`;
  if (length < FPM_HEADER_BYTES) return `FPM frame length ${length}, shorter than its own ${FPM_HEADER_BYTES}-byte header`;
  return null;
}
