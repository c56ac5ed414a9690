// Follows the kernel's tables in one network namespace (links, addresses, nexthop objects,
// routes, neighbours) as FRR, BIRD or `ip` change them: a full dump first, then each change
// as it is notified. Whenever notifications may have been lost, everything is dumped again,
// between 'sync-start' and 'sync-end', so that a consumer can mark what it holds at the
// start and sweep, at the end, what the dump did not confirm.
import { getSystemErrorMessage } from 'node:util';
import { createLog, type Log } from '../log.ts';
import { closeAll, SysError, watchReadable, type Watch } from '../sys/libc.ts';
import { addressRequest, decodeMessages, dumpRequest, type DumpKind, type InterfaceAddress, type IpFamily, type NetlinkEvent, type Op, type TableEvent } from '../sys/netlink.ts';
import {
  DATAGRAM_TOO_LARGE,
  joinGroup,
  netlinkReceive,
  netlinkSend,
  NOT_FROM_KERNEL,
  NOTHING_PENDING,
  NOTIFICATIONS_LOST,
  openRouteSocket,
  RTNLGRP_IPV4_IFADDR,
  RTNLGRP_IPV4_ROUTE,
  RTNLGRP_IPV6_IFADDR,
  RTNLGRP_IPV6_ROUTE,
  RTNLGRP_LINK,
  RTNLGRP_NEIGH,
  RTNLGRP_NEXTHOP,
} from '../sys/netlink-socket.ts';

/**
 * Brackets a full dump. Every object the dump found came as an 'add' event between the two;
 * what the consumer holds from this source and saw no event for in between is gone. A
 * 'sync-start' before the 'sync-end' of the one before means that sync started over.
 */
export type SyncEvent = { kind: 'sync-start' } | { kind: 'sync-end' };
export type WatcherEvent = TableEvent | SyncEvent;

export type Logger = Pick<Log, 'info' | 'warn'>;

export interface NetlinkWatcherOptions {
  /**
   * Notifications the kernel may queue before it drops some, which costs a full dump. A
   * router that installs a full BGP table (a million routes) sends them faster than they
   * are read. Default 64 MiB.
   */
  receiveBufferBytes?: number;
  /**
   * Bytes read before the handler is called and the event loop may run. Default 256 KiB,
   * some 4,000 routes: a dump of 100,000 routes blocked the loop 20 ms at most (41 with 1 MiB).
   */
  chunkBytes?: number;
  /** How long addAddress and removeAddress wait for the kernel's answer. Default 5 s. */
  requestTimeoutMs?: number;
  log?: Logger;
}

/** The dumps of a sync, one at a time (the kernel runs one dump per socket): nexthop objects before the routes that use them. */
const SYNC_DUMPS: readonly [DumpKind, IpFamily | null][] = [
  ['link', null],
  ['address', null],
  ['nexthop', null],
  ['route', 4],
  ['route', 6],
  ['neighbour', null],
];
const GROUPS = [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_NEIGH];
/** A datagram of a dump is at most 32 KiB (netlink_dump); room to spare for a large link message. */
const FIRST_BUFFER_BYTES = 256 * 1024;
const MAX_BUFFER_BYTES = 16 * 1024 * 1024;
const SYNC_RETRY_MS = 1000;
/**
 * An interrupted dump (NLM_F_DUMP_INTR: the kernel's table changed while it was read, so
 * the dump may have skipped entries) is asked for again, alone: what it did report did
 * exist, and changes since are notified. This many times at once, then after
 * SYNC_RETRY_MS each time, so that a table that keeps changing (addresses added and
 * removed without pause: Linux 6.1 marks address dumps so) costs a dump a second, not a thread.
 */
const INTERRUPTED_RETRIES_AT_ONCE = 3;
const FLUSH_RESYNC_DELAY_MS = 50;

interface PendingRequest {
  what: string;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class NetlinkWatcher {
  readonly netns: string | null;
  /** Counted from start(); a consumer may show them. */
  readonly counters = { datagrams: 0, events: 0, syncs: 0, dumpsInterrupted: 0, notificationsLost: 0, malformed: 0, notFromKernel: 0 };
  private readonly onEvents: (events: WatcherEvent[]) => void;
  private readonly receiveBufferBytes: number;
  private readonly chunkBytes: number;
  private readonly requestTimeoutMs: number;
  private readonly log: Logger;
  private fd = -1;
  private watch: Watch | null = null;
  private buffer = new Uint8Array(FIRST_BUFFER_BYTES);
  private readonly decoded: NetlinkEvent[] = [];
  /** events not yet handed to onEvents */
  private out: WatcherEvent[] = [];
  private seq = 0;
  /** the dumps of the sync in progress still to send; null when no sync is in progress */
  private dumpsLeft: [DumpKind, IpFamily | null][] | null = null;
  /** the seq of the dump the kernel is answering, 0 if none */
  private dumpSeq = 0;
  private dumpKind: DumpKind = 'link';
  private dumpFamily: IpFamily | null = null;
  /** times in a row the dump in flight came back interrupted */
  private interruptedInRow = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  /** whether each interface seen is up: its going down may take IPv4 routes silently */
  private readonly linksUp = new Map<number, boolean>();
  private flushTimer: NodeJS.Timeout | null = null;
  /** notifications were lost during a sync: start it over once the dump in flight ends */
  private restartSync = false;
  private readonly requests = new Map<number, PendingRequest>();

  constructor(netns: string | null, onEvents: (events: WatcherEvent[]) => void, options: NetlinkWatcherOptions = {}) {
    this.netns = netns;
    this.onEvents = onEvents;
    this.receiveBufferBytes = options.receiveBufferBytes ?? 64 * 1024 * 1024;
    this.chunkBytes = options.chunkBytes ?? 256 * 1024;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000;
    this.log = options.log ?? createLog('netlink');
  }

  private get where(): string {
    return this.netns === null ? 'the current network namespace' : `network namespace ${this.netns}`;
  }

  /** Opens the socket (in the namespace) and starts the first sync. Throws SysError (no such namespace, no rights). */
  start(): void {
    if (this.fd >= 0) throw new Error('the watcher is already started');
    // Subscribed before the first dump: a change made during it is notified, never missed.
    this.fd = openRouteSocket({ netns: this.netns, groups: GROUPS, receiveBufferBytes: this.receiveBufferBytes });
    try {
      joinGroup(this.fd, RTNLGRP_NEXTHOP);
    } catch (err) {
      this.log.warn(`netlink: no nexthop object notifications in ${this.where} (Linux 5.3+): ${(err as Error).message}`);
    }
    // uv_poll is level-triggered: a drain that stops at chunkBytes is called again on the
    // next turn of the event loop, after the timers and I/O that waited.
    this.watch = watchReadable(this.fd, () => this.drain());
    this.beginSync();
  }

  /** Dumps everything again (between 'sync-start' and 'sync-end'), as after lost notifications. */
  resync(): void {
    if (this.fd < 0) throw new Error('the watcher is not started');
    if (this.dumpPending()) this.restartSync = true;
    else this.beginSync();
  }

  /** Adds an address to an interface of the namespace (RTM_NEWADDR); rejects with SysError (EEXIST if it is there). */
  addAddress(ifindex: number, address: string, prefixLength: number): Promise<void> {
    return this.changeAddress('add', { ifindex, address, prefixLength });
  }

  /** Removes an address from an interface (RTM_DELADDR); rejects with SysError (EADDRNOTAVAIL if it is not there). */
  removeAddress(ifindex: number, address: string, prefixLength: number): Promise<void> {
    return this.changeAddress('remove', { ifindex, address, prefixLength });
  }

  /** Closes the socket; requests waiting for an answer are rejected. Events not yet delivered are dropped. */
  stop(): void {
    // The watch first: koffi aborts the process if a watched fd is closed under it.
    this.watch?.stop();
    this.watch = null;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    this.linksUp.clear();
    if (this.fd >= 0) closeAll([this.fd]);
    this.fd = -1;
    this.dumpsLeft = null;
    this.dumpSeq = 0;
    this.out = [];
    for (const [seq, r] of this.requests) {
      clearTimeout(r.timer);
      this.requests.delete(seq);
      r.reject(new Error(`${r.what}: the watcher of ${this.where} stopped`));
    }
  }

  /** A dump is in flight, or one is to be asked for when retryTimer fires: a new sync waits for it (the kernel runs one dump a socket). */
  private dumpPending(): boolean {
    return this.dumpSeq !== 0 || this.retryTimer !== null;
  }

  private nextSeq(): number {
    this.seq = this.seq >= 0xffffffff ? 1 : this.seq + 1;
    return this.seq;
  }

  private beginSync(): void {
    this.counters.syncs++;
    this.restartSync = false;
    this.interruptedInRow = 0;
    this.out.push({ kind: 'sync-start' });
    this.dumpsLeft = [...SYNC_DUMPS];
    this.nextDump();
  }

  private nextDump(): void {
    const next = this.dumpsLeft?.shift();
    if (next === undefined) {
      this.dumpsLeft = null;
      this.out.push({ kind: 'sync-end' });
      return;
    }
    this.dumpKind = next[0];
    this.dumpFamily = next[1];
    this.dumpSeq = this.nextSeq();
    try {
      netlinkSend(this.fd, dumpRequest(next[0], next[1], this.dumpSeq));
    } catch (err) {
      this.syncFailed(`a ${next[0]} dump could not be asked for: ${(err as Error).message}`);
    }
  }

  /**
   * The dump in flight ended: done, or refused. Only the nexthop dump may fail (a kernel
   * before 5.3 has no nexthop objects): a sync without routes would have the consumer
   * sweep them all.
   */
  private dumpEnded(errno: number, interrupted: boolean): void {
    this.dumpSeq = 0;
    if (errno !== 0 && this.dumpKind !== 'nexthop') return this.syncFailed(`the ${this.dumpKind} dump failed: ${getSystemErrorMessage(-errno)}`);
    if (errno !== 0) this.log.info(`netlink: no nexthop objects in ${this.where} (${getSystemErrorMessage(-errno)})`);
    if (this.restartSync) return this.beginSync();
    if (!interrupted) {
      this.interruptedInRow = 0;
      return this.nextDump();
    }
    this.counters.dumpsInterrupted++;
    this.dumpsLeft!.unshift([this.dumpKind, this.dumpFamily]);
    if (++this.interruptedInRow <= INTERRUPTED_RETRIES_AT_ONCE) return this.nextDump();
    if (this.interruptedInRow === INTERRUPTED_RETRIES_AT_ONCE + 1) {
      this.log.warn(`netlink: the ${this.dumpKind} dump of ${this.where} was interrupted ${INTERRUPTED_RETRIES_AT_ONCE + 1} times in a row (the table keeps changing): asked for again every ${SYNC_RETRY_MS} ms`);
    }
    this.retryLater(() => (this.restartSync ? this.beginSync() : this.nextDump()));
  }

  /** `retry` SYNC_RETRY_MS from now (once, however often asked meanwhile), then what it found delivered; nothing once stopped. */
  private retryLater(retry: () => void): void {
    this.retryTimer ??= setTimeout(() => {
      this.retryTimer = null;
      if (this.fd < 0) return;
      retry();
      this.deliver();
    }, SYNC_RETRY_MS);
  }

  /** A sync that cannot finish starts over a little later, with a new 'sync-start'; it never ends with a partial 'sync-end'. */
  private syncFailed(why: string): void {
    this.log.warn(`netlink: sync of ${this.where} failed (${why}); trying again in ${SYNC_RETRY_MS} ms`);
    this.dumpSeq = 0;
    this.dumpsLeft = null;
    this.retryLater(() => this.resync());
  }

  private notificationsLost(why: string): void {
    this.counters.notificationsLost++;
    this.log.warn(`netlink: ${why} in ${this.where}: everything is dumped again`);
    if (this.dumpPending()) this.restartSync = true;
    else this.beginSync();
  }

  /** Reads what the socket holds, up to chunkBytes, and hands the events over. */
  private drain(): void {
    if (this.fd < 0) return;
    try {
      for (let budget = this.chunkBytes; budget > 0; ) {
        const n = netlinkReceive(this.fd, this.buffer);
        if (n === NOTHING_PENDING) break;
        if (n === NOTIFICATIONS_LOST) {
          // The socket polled POLLERR until this read took the error, and on POLLERR libuv
          // stops watching an fd (after one last callback): watch it again.
          this.watch?.pause();
          this.watch?.resume();
          this.notificationsLost('the kernel dropped notifications (socket receive buffer full)');
          continue;
        }
        if (n === NOT_FROM_KERNEL) {
          // Charged as a page read: a process sending without pause must not hold this thread.
          this.counters.notFromKernel++;
          budget -= 4096;
          continue;
        }
        if (n === DATAGRAM_TOO_LARGE) {
          this.buffer = new Uint8Array(Math.min(MAX_BUFFER_BYTES, this.buffer.length * 2));
          this.notificationsLost(`a datagram was larger than the receive buffer (now ${this.buffer.length >> 10} KiB)`);
          continue;
        }
        this.counters.datagrams++;
        budget -= n;
        this.decoded.length = 0;
        for (const ev of decodeMessages(this.buffer.subarray(0, n), this.decoded)) this.dispatch(ev);
      }
    } catch (err) {
      // An error the socket had to report (it is taken now) made libuv stop watching, as above.
      this.watch?.pause();
      this.watch?.resume();
      this.log.warn(`netlink: reading in ${this.where} failed: ${(err as Error).message}`);
    }
    this.deliver();
  }

  private dispatch(ev: NetlinkEvent): void {
    switch (ev.kind) {
      case 'done':
        if (ev.seq === this.dumpSeq) this.dumpEnded(ev.errno, ev.interrupted);
        return;
      case 'ack': {
        if (ev.seq === this.dumpSeq && ev.errno !== 0) return this.dumpEnded(ev.errno, false);
        const r = this.requests.get(ev.seq);
        if (r === undefined) return;
        this.requests.delete(ev.seq);
        clearTimeout(r.timer);
        if (ev.errno === 0) r.resolve();
        else r.reject(new SysError(r.what, ev.errno, ev.message ?? getSystemErrorMessage(-ev.errno)));
        return;
      }
      case 'overrun':
        return this.notificationsLost('the kernel reported an overrun');
      case 'malformed':
        this.counters.malformed++;
        this.log.warn(`netlink: a message from the kernel in ${this.where} could not be decoded: ${ev.reason}`);
        return;
      default:
        this.counters.events++;
        this.out.push(ev);
        this.noticeSilentFlush(ev);
    }
  }

  /**
   * The kernel removes IPv4 routes without a notification when their interface goes down
   * or away (fib_disable_ip), and those that use an IPv4 address that goes (fib_sync_down_addr):
   * only a dump tells which. IPv6 notifies its removals. Resyncs a moment later, so that the
   * events of one change (a link down takes addresses and routes with it) bring one sync.
   */
  private noticeSilentFlush(ev: TableEvent): void {
    let why: string | null = null;
    if (ev.kind === 'link') {
      const wasUp = this.linksUp.get(ev.ifindex);
      if (ev.op === 'remove') this.linksUp.delete(ev.ifindex);
      else this.linksUp.set(ev.ifindex, ev.up);
      if (wasUp === true && (ev.op === 'remove' || !ev.up)) why = `interface ${ev.name} went ${ev.op === 'remove' ? 'away' : 'down'}`;
    } else if (ev.kind === 'address' && ev.op === 'remove' && ev.family === 4) {
      why = `address ${ev.address} was removed`;
    }
    if (why === null || this.flushTimer !== null) return;
    this.log.info(`netlink: ${why} in ${this.where}: the kernel may have removed IPv4 routes without a word; everything is dumped again`);
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      if (this.fd < 0) return;
      this.resync();
      this.deliver();
    }, FLUSH_RESYNC_DELAY_MS);
  }

  private deliver(): void {
    if (this.out.length === 0) return;
    const events = this.out;
    this.out = [];
    try {
      this.onEvents(events);
    } catch (err) {
      this.log.warn(`netlink: the event handler threw: ${(err as Error).message}`);
    }
  }

  private changeAddress(op: Op, a: InterfaceAddress): Promise<void> {
    const what = `${op === 'add' ? 'RTM_NEWADDR' : 'RTM_DELADDR'} ${a.address}/${a.prefixLength} on interface ${a.ifindex}`;
    if (this.fd < 0) return Promise.reject(new Error(`${what}: the watcher is not started`));
    const seq = this.nextSeq();
    try {
      netlinkSend(this.fd, addressRequest(op, a, seq));
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.requests.delete(seq);
        reject(new Error(`${what}: no answer from the kernel in ${this.requestTimeoutMs} ms`));
      }, this.requestTimeoutMs);
      this.requests.set(seq, { what, resolve, reject, timer });
    });
  }
}
