// The plugin API: everything a pipeline stage may use, and all it may use. A plugin is a
// module whose default export is a Plugin record; it sees a burst as a PacketBatch (struct
// of arrays) and only writes decisions into it: where each packet goes, or why it is
// dropped. The PMD's egress step counts, delivers and frees; a stage never does.
//
// Rules of the hot path apply to process(): no allocation, closure or exception per
// packet; read what you need once per batch; keep one shape per object.

export const PLUGIN_API_VERSION = 1;

/**
 * batch.egress[i] values: EGRESS_FLOOD (every member of the ingress port's bridge but the
 * ingress port), EGRESS_UNDECIDED (no stage said yet: dropped as no_destination at the end),
 * EGRESS_CONSUMED (the stage took the packet in whole, e.g. kept a copy: freed, not a drop).
 */
export { EGRESS_CONSUMED, EGRESS_FLOOD, EGRESS_UNDECIDED } from '../dataplane/egress-codes.ts';
/** Helpers for headers and checksums (IPv4, IPv6, ICMP, ARP) that plugins share. */
export * from './net.ts';
export { listEditOf, parseEdited, type ListEdit } from './list-edits.ts';
/**
 * Memory the PMDs share must be allocated with sharedBuffer(): in the supervisor it is a
 * region of the shared memory the data-plane process maps (a SharedArrayBuffer cannot
 * leave its process); isSharedBuffer() tells either kind from an ordinary ArrayBuffer.
 */
export { isSharedBuffer, sharedBuffer } from '../sys/shared-arena.ts';
export { HEADER_BYTES } from '../dataplane/deferred-payloads.ts';
/** Port slots: batch.ingress, egress ports and PortInfo.index are below it, for per-port tables. */
export { PORT_SLOTS } from '../dataplane/counters.ts';
/** Rate limits by key (a port slot, an interface), for no allocation per packet. */
export { TokenBuckets } from './token-buckets.ts';

export interface PacketBatch {
  /** packets in this batch: at most 32 received, and up to 32 more that stages emit() */
  readonly count: number;
  /**
   * The time, in ms since the epoch (performance.timeOrigin + performance.now(): the same
   * clock in every PMD), read once per poll round by the PMD. Stages use it rather than
   * reading a clock: a read costs 25-90 ns, and several stages each reading one per burst
   * showed in the profile of a busy PMD.
   */
  readonly now: number;
  /** the port index the burst came from (one queue's burst) */
  readonly ingress: number;
  /** per packet: the destination port index, EGRESS_FLOOD, EGRESS_UNDECIDED, or a drop (see dropped()) */
  readonly egress: Int32Array;
  /** the packet buffers: packet i's Ethernet frame is data[offset(i) .. offset(i) + length(i)) */
  readonly data: Uint8Array;
  /**
   * The same memory as data, from its start, as 16- and 32-bit words of the machine's byte
   * order: the bytes k, k + 1 of data are words16[k >>> 1] (k even). An aligned header field
   * read or written in one load or store, not two or four byte accesses (byte swapped on a
   * little-endian host).
   */
  readonly words16: Uint16Array;
  readonly words32: Uint32Array;
  /** Where packet i's frame starts in data: always a multiple of 64, so its header fields are aligned in words16 and words32. */
  offset(i: number): number;
  length(i: number): number;
  /** the most bytes a frame may have (there is this much room at offset(i); a super-frame has more) */
  readonly frameRoom: number;
  /** sets packet i's length after the stage rewrote it (shorter, or longer up to frameRoom) */
  setLength(i: number, length: number): void;
  /** marks packet i dropped, for a reason code from PluginContext.dropCode() */
  dropAs(i: number, code: number): void;
  /** whether a stage dropped or consumed packet i (later stages leave it alone) */
  dropped(i: number): boolean;
  /**
   * Per packet, 0 when the burst starts: a number an earlier stage passes to later ones
   * (the acl stage writes the policer of the rule that matched, see plugins/acl).
   */
  readonly mark: Uint32Array;
  /**
   * Per packet: 1 for the router's own packets, those emit() added and the answers a stage
   * wrote in place of a request (ARP and NDP replies, echo replies): a filter leaves them
   * alone, as Linux's FORWARD chain never sees the router's own output. Set it on an answer;
   * clear it on a packet emit() added that carries the ingress port's traffic (a fragment,
   * a packet held and sent on), which later stages must judge as they judge the rest.
   */
  readonly local: Uint8Array;
  /**
   * Adds an empty packet bound for `egress` (a port index or EGRESS_FLOOD) at the end of
   * the batch and returns its index, or -1 when the batch or the buffer pool is full:
   * write the frame at offset(index), then setLength(index, n). Later stages see it.
   */
  emit(egress: number): number;
  /**
   * A guest with checksum offload may send TCP and UDP frames whose checksum is left to do
   * (the field holds the pseudo-header's sum only); vrouter completes it where the frame
   * leaves for a port that does not take it so. A stage that moves or copies the L4 bytes
   * elsewhere (fragments, a copy kept for later) or changes them calls this first: it
   * completes packet i's checksum now, if one is left to do. Rewriting L2 and L3 headers
   * (MACs, TTL, DSCP) needs nothing: the pseudo-header holds no such field.
   */
  completeChecksum(i: number): void;
  /**
   * A guest with segmentation offload (TSO) may send a super-frame: up to 64 KiB of a TCP
   * stream in one frame, cut into segments where it leaves for a port that does not take
   * it so. For such a packet: the length of the IP packets it will be cut into (headers and
   * one segment's payload), which is what the egress MTU must allow; 0 for any other.
   */
  segmentLength(i: number): number;
  /**
   * A stage about to write a new frame in packet i's place (an answer to its sender: a TCP
   * reset, an ICMP error) calls this first: what the sender's frame left to do (a checksum,
   * its cutting into segments) does not apply to the frame written.
   */
  rewritten(i: number): void;
  /** the bytes packet i puts on the wire: a super-frame's segments each repeat its headers */
  wireLength(i: number): number;
  /** before rewriting packet i's Ethernet header: keeps its source MAC for receivedSource() */
  saveSource(i: number): void;
  /** offset in data of the 6-byte source MAC packet i arrived with (to answer its sender) */
  receivedSource(i: number): number;
}

export interface PortInfo {
  /** the port's slot: its index in every per-port table, kept while the port exists */
  index: number;
  /** '' for a free slot (a port removed at run time, not yet taken again): it has no traffic */
  name: string;
  /** the bridge the port is in (EGRESS_FLOOD reaches its other members), or null */
  bridge: string | null;
  /** the port's entry in the config's "ports", defaults filled in (e.g. mac, macLimit) */
  settings: Readonly<Record<string, unknown>>;
}

/** What a plugin may size its shared memory by. */
export interface Topology {
  ports: readonly PortInfo[];
  /** bridge names, in the order of first appearance in "ports" */
  bridges: readonly string[];
  /** each bridge's entry in the config's "bridges" (defaults filled in), by name */
  bridgeSettings: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  pmdCount: number;
}

export interface PluginLog {
  info(msg: string): void;
  warn(msg: string): void;
}

/** What a plugin gets once per PMD thread, to build its per-PMD state from. */
export interface PluginContext<Config> {
  /** the plugin's own config, as parseConfig returned it */
  readonly config: Config;
  /** this PMD and how many there are (state may be per PMD: no locks) */
  readonly pmd: number;
  readonly pmdCount: number;
  readonly ports: readonly PortInfo[];
  readonly bridges: readonly string[];
  readonly bridgeSettings: Topology['bridgeSettings'];
  /**
   * The topology of the PMDs this one replaces, when it starts on a new one (ports added,
   * removed or changed at run time): what changed may be announced (the routing stage's
   * gratuitous ARPs for a new router MAC). Null at vrouter's start, at a restart after a
   * death, at an upgrade: the topology is the one the ports had.
   */
  readonly previous: Topology | null;
  /**
   * The plugin's shared memory (see Plugin.sharedMemory): the same buffers in every PMD,
   * allocated once and zero-filled, kept across PMD restarts.
   */
  readonly shared: Readonly<Record<string, ArrayBufferLike>>;
  readonly log: PluginLog;
  /** the code of one of the plugin's declared drop reasons, for batch.dropAs() */
  dropCode(reason: string): number;
  /** the id of one of the plugin's declared counters, for count() */
  counterId(counter: string): number;
  /** adds n to a declared counter of a port (each PMD writes its own block: no atomics) */
  count(port: number, counter: number, n: number): void;
  /**
   * Asks for a batch from `port` at the end of this poll round, empty if the port sent
   * nothing: for a stage to emit() into packets that came from that port earlier (the
   * routing stage's held packets, once their next hop answers), so that the stages after
   * it see them as that port's traffic. May be called from process() and betweenBursts().
   */
  wantBatch(port: number): void;
  /**
   * Whether a frame sent to `port` now would be taken: some PMD has its receive queue (a
   * frontend is connected, an interface is open). What a stage sends on its own (an
   * advertisement) need not go to a port that is down, where it is dropped as port_down.
   */
  portUp(port: number): boolean;
}

/**
 * A route a route source learned (a network namespace's main table through netlink, FRR's
 * zebra over FPM), in the form of a route of the config, with its source. Routes of a
 * source with the same gateways share one `via` array (a table of a million routes names
 * a few gateways): a plugin may cache what it makes of one by the array.
 */
export interface LearnedRoute {
  /** canonical, host bits clear: "10.1.0.0/16", "2001:db8::/32" */
  readonly prefix: string;
  /** gateways (several: ECMP); none for a route straight out of `port`, or a blackhole */
  readonly via?: readonly string[];
  /** the port the gateways are on (a route through a port's Linux mirror) */
  readonly port?: string;
  readonly metric: number;
  readonly blackhole?: true;
  /** "netlink NS", "fpm HOST:PORT" */
  readonly source: string;
}

/**
 * What the route sources hold, by prefix, read where it is kept (the supervisor's): a
 * plugin that compiles its tables whole reads them all; told which prefixes changed
 * (Plugin.routesLearned), it reads those. Nothing is copied until read.
 */
export interface LearnedRoutes {
  /** the routes to a prefix (written as LearnedRoute.prefix), every source's; empty if none */
  get(prefix: string): readonly LearnedRoute[];
  /** the routes to each prefix that has any, a prefix at a time (a pass over every source's table) */
  all(): Iterable<readonly LearnedRoute[]>;
}

export const NO_LEARNED_ROUTES: LearnedRoutes = { get: () => [], all: () => [] };

/**
 * The prefixes whose learned routes changed (as LearnedRoute.prefix writes them): how
 * many, and each, made as it is read: a plugin that compiles its tables whole for a big
 * change reads only the count.
 */
export interface ChangedPrefixes extends Iterable<string> {
  readonly size: number;
  /**
   * true: more changed than are listed (a million since the last call): the prefixes are
   * every one the sources hold now, those removed not among them: build the tables whole.
   */
  readonly whole?: boolean;
}

/** What a plugin's prepare() gets, once, in the control plane (not in a PMD). */
export interface PluginSetup<Config> {
  readonly config: Config;
  readonly topology: Topology;
  /** the plugin's shared memory; regions are zero-filled unless kept from before (fresh) */
  readonly shared: Readonly<Record<string, ArrayBufferLike>>;
  /**
   * Whether a region is new (zero-filled). On a reload, a region asked for again with the
   * same name and size is kept with what is in it (running PMDs use it meanwhile): initialise
   * only fresh ones, so that a table of learned state survives a change of config.
   */
  fresh(region: string): boolean;
  readonly log: PluginLog;
  /**
   * Runs a module's default export on `input` in the control plane's worker pool (piscina):
   * for work that takes long, such as compiling a million routes. Shared buffers in
   * `input` are shared, not copied, so the job can write the tables in place; those the
   * job makes with sharedBuffer() are made in the shared memory itself, and those it
   * returns are the plugin's (the others are freed once it ends).
   */
  runJob<T>(module: string | URL, input: unknown): Promise<T>;
  /** the routes the route sources learned (see Plugin.routesLearned); absent: none */
  readonly learnedRoutes?: LearnedRoutes;
}

/** What a table's handlers see: the plugin's config and shared memory, from the control plane. */
export interface TableView<Config> {
  readonly config: Config;
  readonly topology: Topology;
  readonly shared: Readonly<Record<string, ArrayBufferLike>>;
  /** the routes the route sources learned; absent: none */
  readonly learnedRoutes?: LearnedRoutes;
}

/** What a table's list() yields to let other work run while it passes over entries it leaves out. */
export const LIST_PAUSE = null;

/**
 * One of a plugin's tables, as the admin endpoint shows it (routes, neighbours, rules):
 * list() reads it from shared memory, without stopping a PMD; entries are plain JSON.
 */
export interface PluginTable<Config> {
  /** one line: what an entry is */
  description: string;
  /** query parameters list() takes (name -> meaning), for the admin endpoint's description */
  query?: Record<string, string>;
  /**
   * The entries, those the query asks for. An iterable rather than an array for a table
   * that may hold a million entries: the admin endpoint writes them out as they come.
   * While it passes over many entries the query leaves out, it may yield null now and
   * then (LIST_PAUSE): nothing is written for it, and the supervisor's other work runs.
   * Throws PluginConfigError naming the query parameter at fault.
   */
  list(view: TableView<Config>, query: Readonly<Record<string, string>>): Iterable<Record<string, unknown> | null>;
}

/** A config mistake: `field` is the path inside the plugin's config (e.g. "rules[3].dstPort"). */
export class PluginConfigError extends Error {
  readonly field: string;
  readonly code = 'VR_PLUGIN_CONFIG';
  constructor(field: string, reason: string) {
    super(`${field}: ${reason}`);
    this.field = field;
  }
}

/** The registration record a plugin module exports as its default export. */
export interface Plugin<Config = unknown, State = unknown> {
  name: string;
  version: string;
  /** the PLUGIN_API_VERSION it was written for */
  apiVersion: number;
  /**
   * Validates the plugin's config (everything in its "plugins" entry but "path") and
   * fills in defaults; throws PluginConfigError naming the field. Default: no config keys.
   */
  parseConfig?(raw: Record<string, unknown>): Config;
  /** its tables by name, for the admin endpoint (GET /plugins/NAME/TABLE) */
  tables?: Record<string, PluginTable<Config>>;
  /**
   * Numbers worth watching, by name (table sizes, live connections): exported as metrics
   * (vrouter_plugin_state). Read from shared memory in the control plane, like tables.
   */
  gauges?(view: TableView<Config>): Record<string, number>;
  /** drop reasons, declared once: [name, one-line meaning] */
  dropReasons?: readonly (readonly [string, string])[];
  /** per-port counters, declared once: [name, one-line meaning] */
  counters?: readonly (readonly [string, string])[];
  /**
   * Shared memory the plugin's tables live in, by region name and size in bytes: state
   * that must outlive a PMD thread or be seen by every PMD (tables, learned entries) lives
   * there, never only on a thread's heap.
   */
  sharedMemory?(config: Config, topology: Topology): Record<string, number>;
  /**
   * Fills the shared memory before the PMDs start (compiles tables from the config), in
   * the control plane; a rejection is a config error (throw PluginConfigError to name the
   * field). It may return more regions, sized by what it compiled (a route table): they
   * join `shared` in every PMD. Runs again only when the plugin's regions are allocated
   * anew (a reload that changes them).
   */
  prepare?(setup: PluginSetup<Config>): Promise<Record<string, ArrayBufferLike> | void> | Record<string, ArrayBufferLike> | void;
  /**
   * Between two bursts, in each PMD: the control plane applied a new config of this plugin
   * (a reload that changed only plugin configs, such as routes or rules) and prepare() built
   * its tables into `shared`; the state switches to them. Not called when neither what the
   * PMDs get of the config (pmdConfig) nor the regions changed: tables changed in place are
   * read as they change. Without it, such a change restarts the PMDs on the new config.
   */
  tablesChanged?(state: State, update: { config: Config; shared: Readonly<Record<string, ArrayBufferLike>> }): void;
  /**
   * The routes the route sources learned changed (those to `prefixes`: read them from
   * setup.learnedRoutes): in the control plane, a burst of changes at a time, without a
   * new config. The plugin changes its tables in place, or builds them anew, sized for
   * what they hold now, and returns the regions as prepare() does (the PMDs then switch to
   * them, see tablesChanged, which a plugin with this hook must have). prepare() reads
   * every learned route when it builds tables whole, so a new config or new ports keep
   * them. Without it, the plugin does not see learned routes. One call at a time, never
   * during prepare(); a rejection is logged, and the tables stay as they were.
   */
  routesLearned?(setup: PluginSetup<Config>, prefixes: ChangedPrefixes): Promise<Record<string, ArrayBufferLike> | void> | Record<string, ArrayBufferLike> | void;
  /**
   * The part of the config the PMDs need (createState, tablesChanged), when it is much
   * smaller than the whole: every change of the config is copied into each PMD, which
   * spends the time between two bursts. The routing stage leaves its routes out (they are
   * in the tables prepare() built). Without it, the PMDs get the whole config.
   */
  pmdConfig?(config: Config): Config;
  /** per-PMD state, built in the PMD thread before it polls */
  createState(ctx: PluginContext<Config>): State;
  /** once per poll round, between bursts: housekeeping (aging a table a slice at a time) */
  betweenBursts?(state: State): void;
  /**
   * vrouter is stopping (not a data plane restarting, nor an upgrade): once on each PMD,
   * between bursts, while the ports are still connected. Frames the stage has still to
   * send go out in the batches it asks for (PluginContext.wantBatch), which run right after.
   * The routing stage sends its last router advertisements there (router lifetime 0), and
   * drops the packets it holds, counted.
   */
  stopping?(state: State): void;
  /**
   * The PMDs are about to be replaced by ones on `next`: ports added, removed or changed at
   * run time (their addresses, bridge, MAC), or the same topology (an upgrade of the data
   * plane, plugin files loaded again). Once on each PMD, between bursts, while every
   * port of the topology it runs on is still connected, and only once the change can no
   * longer be refused. Frames owed to the ports that go or change go out as in stopping().
   * It may come more than once for one change (the same `next`): send what is owed once.
   * The routing stage tells the hosts on ports where it stops being their IPv6 router, or
   * withdraws prefixes, with a last advertisement, and drops the packets it holds, counted
   * (they would be lost with the PMD's state).
   */
  leaving?(state: State, next: Topology): void;
  /** one batch: write decisions into it, nothing else */
  process(batch: PacketBatch, state: State): void;
  /**
   * For a stage that looks at headers alone: the most bytes from a frame's start that
   * process() reads or writes (the bridge: 12, the two MACs). While every stage of the
   * pipeline declares at most HEADER_BYTES, a frame bound for a guest on the same PMD is
   * copied once, from guest to guest, and the stages see only its first HEADER_BYTES in
   * data (length(i) is still the whole frame's). Without it, a stage may read any byte.
   */
  headerBytes?: number;
  /**
   * For packet capture (GET /ports/NAME/capture), right after process() and only for the
   * packets being captured: what the stage did to packet i, in a few words for the trace
   * (the routing stage: "via 10.0.2.254 port b"), or null. Off the hot path: it may build
   * a string. Without it, or when it returns null, the trace says what changed in the
   * batch: "to port b", "flood", "dropped: acl_deny", "mark 2", or "no change". An empty
   * string says the stage does not apply to the packet (the bridge on a routed port): if
   * it changed nothing, the trace leaves the stage out.
   */
  describe?(state: State, batch: PacketBatch, i: number): string | null;
  /**
   * If process() hangs (the PMD's heartbeat stops for a second), the PMD is restarted
   * with this plugin taken out: 'bypass' lets its traffic through unprocessed, 'drop' drops
   * it (counted as plugin_error). Default 'drop': a plugin that filters fails closed.
   */
  onError?: 'bypass' | 'drop';
}
