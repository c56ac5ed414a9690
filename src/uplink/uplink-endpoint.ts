// A port that is a kernel interface, as the control thread runs it. A TAP port: vrouter
// creates the TAP interface (the host's network stack on its other side). An AF_PACKET
// port: vrouter opens a packet socket with memory-mapped rings on an existing interface (a
// NIC, one end of a veth pair). An AF_XDP port: an AF_XDP socket per queue of an existing
// interface, and the XDP program that steers the queue's frames to it. Either way the
// control thread holds the fds for as long as the port exists (a TAP interface lives as long
// as an fd is open; a socket's rings too), so a data plane that dies takes none of it, and
// hands the PMD that polls the port a copy.
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { closeAll, inNetworkNamespace, interfaceIndex, interfaceMtu, interfaceUp, NETNS_DIR, packetRingBytes, packetSocket, promiscuousHold, setInterfaceMac, setTapMtu, tapAttached, tapOpen, type PacketRingShape } from '../sys/libc.ts';
import type { Dataplane, PortCommand, XdpMappings } from '../vhost/dataplane-link.ts';
import type { Logger } from '../vhost/connection.ts';
import { newRegionId } from '../vhost/memory-table.ts';
import type { EndpointSettings, PortState } from '../vhost/port-endpoint.ts';
import type { MirrorOf } from '../control/config.ts';
import { TX_DATA_OFFSET } from '../dataplane/packet-ring.ts';
import { xdpLayout, xdpSocket, XDP_RINGS } from '../sys/xdp.ts';
import { xdpSteer, xdpSteerQueue, type XdpSteering } from '../sys/xdp-steering.ts';
import { addressRequest } from '../sys/netlink.ts';
import { requestAll, type AckedRequest } from '../sys/netlink-request.ts';

/** Rings of 64 KiB blocks: 4 MiB to receive into (a burst of about 2,700 full-size frames), 1 MiB to send from. */
const BLOCK_BYTES = 1 << 16;
const RX_BLOCKS = 64;
const TX_BLOCKS = 16;
/** AF_XDP: entries of the rx and fill rings (as many receive chunks), and of the tx and completion rings */
const XDP_RX_ENTRIES = 2048;
const XDP_TX_ENTRIES = 1024;
/** a receive block not full is handed over after this many ms (the latency of a lone frame) */
const RETIRE_MS = 1;
/** how often an uplink port checks that its interface is still the one it is bound to (TAP: still there) */
const INTERFACE_CHECK_MS = 1000;
/** The longest wait between two tries to open an interface that came back but would not open. */
const REOPEN_DELAY_MAX_MS = 60_000;

/** The rings of an AF_PACKET port whose frames are at most maxFrame bytes. */
export function ringShape(maxFrame: number): PacketRingShape {
  return { blockBytes: BLOCK_BYTES, rxBlocks: RX_BLOCKS, txBlocks: TX_BLOCKS, txFrameBytes: Math.ceil((TX_DATA_OFFSET + maxFrame) / 16) * 16, retireMs: RETIRE_MS };
}

/** What tells uplinks apart: the kind, the interface and, for a mirror, its namespace. */
export function uplinkKey(e: Pick<EndpointSettings, 'type' | 'interface' | 'mirror'>): string {
  return `${e.type}:${e.mirror === null ? '' : `${e.mirror.netns}/`}${e.interface}`;
}

/**
 * Why an AF_PACKET or AF_XDP port cannot open its interface as things stand, or null: no
 * interface of that name, or one whose MTU is below the port's (the kernel would refuse to
 * send the port's longest frames, AF_PACKET, or send what the interface's peer drops).
 * Checked before a changed port's endpoint is closed, so that a refused change leaves the
 * port running.
 */
export function interfaceRefusal(s: Pick<EndpointSettings, 'type' | 'interface' | 'mtu'>): string | null {
  if (s.type !== 'af_packet' && s.type !== 'af_xdp') return null;
  const name = s.interface!;
  if (interfaceIndex(name) === 0) return `no interface of that name ("interface": "${name}")`;
  const mtu = interfaceMtu(name);
  if (mtu < s.mtu) return `interface ${name} has MTU ${mtu}, below the port's ${s.mtu} ("mtu"): set the interface's (ip link set ${name} mtu ${s.mtu}) or the port's`;
  return null;
}

/**
 * A TAP interface, with `mac` if given (set while it is down), up with the MTU: an fd per
 * queue (more than one: an IFF_MULTI_QUEUE interface). `beforeUp` runs while it is made and
 * down; if it throws, the interface goes.
 */
function openTap(name: string, mtu: number, mac: string | null, queues = 1, beforeUp?: () => void): number[] {
  const fds: number[] = [];
  try {
    for (let q = 0; q < queues; q++) fds.push(tapOpen(name, queues > 1));
    if (mac !== null) setInterfaceMac(name, mac);
    beforeUp?.();
    interfaceUp(name, mtu);
  } catch (err) {
    // The interface goes with its last fd.
    closeAll(fds);
    throw err;
  }
  return fds;
}

/**
 * A port's mirror: a TAP interface in the mirror's namespace (made if there is none) with the
 * port's MAC, MTU and addresses, so that Linux there is the router on the port's link. The
 * addresses go through netlink in the namespace, as `ip address replace` would give them;
 * IPv6 ones skip duplicate address detection: they are the router's, already in use.
 */
function openMirror(name: string, mtu: number, mirror: MirrorOf): number {
  if (!existsSync(`${NETNS_DIR}/${mirror.netns}`)) execFileSync('ip', ['netns', 'add', mirror.netns], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 5000 });
  const { fd, ifindex } = inNetworkNamespace(mirror.netns, () => {
    // Set while it is down: no advertisement is taken in between.
    const [tap] = openTap(name, mtu, mirror.mac, 1, () => ignoreRouterAdvertisements(name));
    return { fd: tap, ifindex: interfaceIndex(name) };
  });
  try {
    requestAll(mirror.netns, mirror.addresses.map((a) => addressReplacement(ifindex, a)));
  } catch (err) {
    closeAll([fd]);
    throw new Error(`cannot give ${name} in ${mirror.netns} its addresses: ${(err as Error).message}`);
  }
  return fd;
}

/**
 * The mirror is the router on the port's link: Linux there takes no default route or
 * address from a router advertisement a guest or an outside host sends (the kernel's
 * default in a namespace that does not forward), which the route source would learn as the
 * router's own. Called in the mirror's namespace (/proc/sys/net is the opener's); a kernel
 * without IPv6 has no such files.
 */
function ignoreRouterAdvertisements(name: string): void {
  for (const setting of ['accept_ra', 'autoconf']) {
    const path = `/proc/sys/net/ipv6/conf/${name}/${setting}`;
    if (existsSync(path)) writeFileSync(path, '0');
  }
}

/** An address with its prefix length ("10.0.1.1/24", checked by the config) on the interface, made or updated (`ip address replace`); IPv6 without DAD. */
function addressReplacement(ifindex: number, cidr: string): AckedRequest {
  const [address, length] = cidr.split('/');
  const a = { ifindex, address, prefixLength: Number(length), noDad: address.includes(':') };
  return { what: `RTM_NEWADDR ${cidr}`, build: (seq) => addressRequest('replace', a, seq) };
}

/** A queue of an uplink port: its TAP fd or socket, and what the data plane maps of it. */
interface SocketQueue {
  fd: number;
  /** AF_XDP: its UMEM's memfd */
  umemFd: number;
  /** ids of the data plane's mappings of it: unmapped once its PMD has the next ones */
  mappings: number[];
  /** the command that has a PMD poll it */
  start: (port: number, gen: number, queue: number) => PortCommand;
  /** its size, for the log */
  bytes: number;
}

/** A TAP queue: the fd alone, nothing to map. */
function tapQueue(fd: number): SocketQueue {
  return { fd, umemFd: -1, mappings: [], bytes: 0, start: (port, gen, queue) => ({ t: 'tap-start', port, gen, queue, fd }) };
}

/** fanout groups are per network namespace and 16 bits: one per port of this process, likely unique among processes. */
let nextFanout = (process.pid * 64) & 0xffff;

export class UplinkEndpoint {
  private settings: EndpointSettings;
  private readonly dataplane: Dataplane;
  private readonly log: Logger;
  /**
   * A TAP port's queues, an fd each (the kernel spreads the host's flows over them); an
   * AF_PACKET port's, each a socket with rings (PACKET_FANOUT spreads the flows over them);
   * an AF_XDP port's, one per queue of the interface.
   */
  private queues: SocketQueue[] = [];
  /** AF_XDP: the program steering each queue's frames to its socket, and the fd that keeps the interface promiscuous */
  private steering: XdpSteering | null = null;
  private promiscuous = -1;
  /** AF_PACKET: a queue's rings could not be replaced alone (resync()): every queue gets new ones at the next check */
  private renewAll = false;
  /** the PACKET_FANOUT group of the port's sockets (several AF_PACKET queues): a new one for each interface it binds to */
  private fanout: number | null;
  private released = false;
  private stopped = false;
  /** the generation of the PMD commands (see PmdCommand): one per start */
  private generation = 0;
  /** AF_PACKET, AF_XDP: the index of the interface the sockets are bound to; the timer that checks the interface (every kind) */
  private boundIndex = 0;
  private checkTimer: NodeJS.Timeout | null = null;
  /** AF_PACKET, AF_XDP: new rings on an interface that came back are on their way; and why the last attempt failed */
  private reopening = false;
  private reopenFailure: string | null = null;
  /**
   * After a failed reopen, the next try waits this long (doubling to a minute): each try
   * replaces the rings of the queues that did open, and their frames in flight go.
   */
  private reopenDelayMs = 0;
  private reopenAfter = 0;
  /** TAP: new fds on their way to the PMDs; and why the last attempt to make the interface again failed */
  private remaking = false;
  private remakeFailure: string | null = null;

  constructor(settings: EndpointSettings, dataplane: Dataplane, log: Logger) {
    this.settings = settings;
    this.dataplane = dataplane;
    this.log = log;
    this.fanout = settings.type === 'af_packet' && settings.queues > 1 ? nextFanout++ & 0xffff : null;
  }

  get name(): string {
    return this.settings.name;
  }

  get currentSettings(): EndpointSettings {
    return this.settings;
  }

  /**
   * A TAP port's new MTU (`settings` differ from the port's in it alone), set on the
   * interface it has: it keeps the addresses and routes the host gave it, where closing and
   * opening it again would delete it. The PMDs learn the new frame size as they restart on
   * the new layout. Throws if the kernel refuses it; nothing changed then.
   */
  changeMtu(settings: EndpointSettings): void {
    if (this.settings.type !== 'tap' || this.queues.length === 0) throw new Error(`port ${this.settings.name} has no TAP interface to set the MTU of`);
    const name = setTapMtu(this.queues[0].fd, settings.mtu);
    this.log.info(`port ${this.settings.name}: TAP interface ${name}: MTU ${this.settings.mtu} -> ${settings.mtu}, the interface and what the host configured on it kept`, 'port.mtu', { port: this.settings.name, mtu: settings.mtu });
    this.settings = settings;
  }

  /** What a change of ports matches endpoints by: two ports cannot have the same interface. */
  get key(): string {
    return uplinkKey(this.settings);
  }

  state(): PortState {
    return { connected: this.queues.length > 0, quarantinedForS: 0, refusedForGood: null, controlThrottled: 0, device: null };
  }

  /**
   * Opens the interface, up (a TAP one with the port's MTU), and throws if it cannot be
   * (no such interface, a name taken by one of another kind, no rights). `held`: the PMDs
   * get it at release().
   */
  start(held = false): void {
    const name = this.settings.interface!;
    const mirror = this.settings.mirror;
    if (this.settings.type === 'tap') {
      this.queues = this.makeTap().map(tapQueue);
      this.checkTimer = setInterval(() => this.checkTap(), INTERFACE_CHECK_MS).unref();
    } else {
      // Up before the sockets are bound: one bound to an interface that is down starts with
      // an error (ENETDOWN) that its first send reports.
      const refusal = interfaceRefusal(this.settings);
      if (refusal !== null) throw new Error(refusal);
      interfaceUp(name);
      try {
        const index = interfaceIndex(name);
        this.openQueues();
        this.boundIndex = index;
      } catch (err) {
        this.closeQueues();
        throw err;
      }
      this.checkTimer = setInterval(() => this.checkInterface(), INTERFACE_CHECK_MS).unref();
    }
    this.generation++;
    const many = this.queues.length > 1;
    const rings =
      this.settings.type === 'tap' ? `TAP interface ${name} up, MTU ${this.settings.mtu}${many ? `, ${this.queues.length} queues (IFF_MULTI_QUEUE)` : ''}`
      : this.steering !== null ? `AF_XDP sockets on ${name} (copy mode, XDP program in ${this.steering.mode} mode, ${this.queues[0].bytes >> 20} MiB UMEM${many ? ` per queue, queues 0-${this.queues.length - 1}` : ''})`
      : `AF_PACKET rings on ${name} (${this.queues[0].bytes >> 20} MiB${many ? ` per queue, ${this.queues.length} queues, PACKET_FANOUT by flow` : ''})`;
    const what =
      mirror !== null ? `Linux mirror of port ${mirror.of}: TAP interface ${name} in network namespace ${mirror.netns}, ${mirror.mac}, MTU ${this.settings.mtu}, ${mirror.addresses.join(' ')}`
      : rings;
    this.log.info(`port ${this.settings.name}: ${what}`, 'port.listening', { port: this.settings.name });
    if (!held) this.release();
  }

  release(): void {
    if (this.stopped || this.released) return;
    this.released = true;
    this.queues.forEach((_, q) => void this.handTo(this.owner(q), q));
  }

  /**
   * A restarted PMD, or a new data plane: the one that polls each queue gets it again. A
   * TAP queue keeps its fd: a frame is a whole read or write, so nothing of the dead PMD's
   * is left in it. An AF_PACKET queue gets new rings: where the dead PMD stood in the old ones (the next
   * block to read, the next slot to send from, which the kernel follows) died with it; the
   * frames it had not read yet are lost with them. An AF_XDP queue keeps its socket: where
   * the PMD stood is in the rings' words, which the next one resumes from.
   */
  async resync(pmd: number, culprit: string | null): Promise<void> {
    if (culprit !== null) this.log.warn(`port ${this.settings.name}: pmd${pmd} died while serving it (${culprit})`);
    if (!this.released) return;
    for (let q = 0; q < this.queues.length; q++) {
      if (this.owner(q) !== pmd) continue;
      if (this.settings.type === 'tap' || this.steering !== null) {
        await this.handTo(pmd, q);
        continue;
      }
      try {
        await this.replaceRings(q);
      } catch (err) {
        // The dead PMD's socket stays in the fanout group, given its share of the flows
        // with no one to read them (the new socket could not be had: no fd or no memory
        // for its rings left, PACKET_FANOUT refused): every queue gets new rings, in a new
        // group, at the next check.
        this.renewAll = true;
        this.log.warn(`port ${this.settings.name}: cannot open new rings on ${this.settings.interface}: ${(err as Error).message}; every queue gets new ones at the next check of the interface`);
      }
    }
  }

  /** New rings for queue q, handed to its PMD; the old ones go once it has the new. Throws if they cannot be opened. */
  private async replaceRings(q: number): Promise<void> {
    const old = this.queues[q];
    this.queues[q] = this.openQueue(q);
    await this.handTo(this.owner(q), q);
    this.closeQueue(old);
  }

  /** Every queue of the port, and for AF_XDP the program that steers frames to them first. */
  private openQueues(): void {
    if (this.settings.type === 'af_xdp') {
      this.steering = xdpSteer(this.settings.interface!, this.settings.queues);
      this.promiscuous = promiscuousHold(this.settings.interface!);
    }
    for (let q = 0; q < this.settings.queues; q++) this.queues.push(this.openQueue(q));
  }

  /**
   * A socket with fresh rings on the interface: AF_PACKET, in the port's fanout group if it
   * has several queues; AF_XDP, bound to the interface's queue q and steered to.
   */
  private openQueue(q: number): SocketQueue {
    const name = this.settings.interface!;
    if (this.steering !== null) {
      // The kernel binds a queue the interface receives on but cannot send from (more
      // receive queues than transmit ones), and sends nothing through it (copy mode sends on
      // the queue it is bound to). sysfs shows this network namespace's interfaces only
      // when it is the one sysfs was mounted in: elsewhere the check is left to the kernel.
      if (existsSync(`/sys/class/net/${name}/queues/rx-${q}`) && !existsSync(`/sys/class/net/${name}/queues/tx-${q}`)) {
        throw new Error(`AF_XDP ${name} queue ${q}: the interface has no transmit queue ${q}, and a socket bound to it could send nothing`);
      }
      const { fd, umemFd, layout } = xdpSocket(name, q, xdpLayout(this.settings.mtu + 18, XDP_RX_ENTRIES, XDP_TX_ENTRIES));
      try {
        xdpSteerQueue(this.steering, q, fd);
      } catch (err) {
        closeAll([fd, umemFd]);
        throw err;
      }
      const maps = Object.fromEntries(['umem', ...XDP_RINGS].map((m) => [m, { id: newRegionId() }])) as XdpMappings;
      const mappings = Object.values(maps).map((m) => m.id);
      return { fd, umemFd, mappings, bytes: layout.umemBytes, start: (port, gen, queue) => ({ t: 'xdp-start', port, gen, queue, fd, umemFd, layout, maps }) };
    }
    const shape = ringShape(this.settings.mtu + 18);
    const fd = packetSocket(name, shape, this.fanout);
    const ring = { id: newRegionId(), bytes: packetRingBytes(shape) };
    return { fd, umemFd: -1, mappings: [ring.id], bytes: ring.bytes, start: (port, gen, queue) => ({ t: 'rings-start', port, gen, queue, fd, shape, ring }) };
  }

  /** A queue no PMD uses any more (it has the next one, or none): its mappings and fds go. */
  private closeQueue(q: SocketQueue): void {
    this.dataplane.unmap(q.mappings);
    closeAll([q.fd, q.umemFd]);
  }

  private closeQueues(): void {
    closeAll(this.queues.flatMap((q) => [q.fd, q.umemFd]));
    this.queues = [];
    this.closeSteering();
  }

  private closeSteering(): void {
    if (this.steering !== null) closeAll([this.steering.linkFd, this.steering.mapFd]);
    this.steering = null;
    if (this.promiscuous >= 0) closeAll([this.promiscuous]);
    this.promiscuous = -1;
  }

  /** The port's TAP interface (in the mirror's namespace, for a mirror), made anew: its fds. */
  private makeTap(): number[] {
    const s = this.settings;
    return s.mirror !== null ? [openMirror(s.interface!, s.mtu, s.mirror)] : openTap(s.interface!, s.mtu, null, s.queues);
  }

  /**
   * vrouter made the TAP interface, so a deleted one (`ip link del`, or the namespace it was
   * moved to gone) is made again, and its new fds go to the PMDs: until then frames to it
   * are refused (counted). Moved or renamed, it is still the port's: the fds follow it.
   */
  private checkTap(): void {
    if (this.stopped || this.remaking || this.queues.length === 0 || this.queues.every((q) => tapAttached(q.fd))) return;
    const name = this.settings.interface!;
    let fds: number[];
    try {
      fds = this.makeTap();
    } catch (err) {
      const why = (err as Error).message;
      if (why !== this.remakeFailure) this.log.warn(`port ${this.settings.name}: TAP interface ${name} was deleted and cannot be made again (tried every second): ${why}`, 'port.failed', { port: this.settings.name });
      this.remakeFailure = why;
      return;
    }
    this.remakeFailure = null;
    this.remaking = true;
    const old = this.queues;
    this.queues = fds.map(tapQueue);
    Promise.all(this.queues.map((_, q) => this.handTo(this.owner(q), q))).finally(() => {
      closeAll(old.map((q) => q.fd));
      this.remaking = false;
      this.log.warn(`port ${this.settings.name}: TAP interface ${name} was deleted: made again`, 'port.listening', { port: this.settings.name });
    });
  }

  /**
   * An interface that went away leaves the sockets bound to nothing: frames to it are
   * refused (counted). One of the same name that appears (again) gets new rings.
   */
  private checkInterface(): void {
    if (this.stopped || this.reopening || this.queues.length === 0) return;
    const name = this.settings.interface!;
    const index = interfaceIndex(name);
    if (index === this.boundIndex && !this.renewAll) return;
    if (index === 0) {
      if (this.boundIndex !== 0) this.log.warn(`port ${this.settings.name}: interface ${name} is gone: frames to it are refused until it is back`, 'port.failed', { port: this.settings.name });
      this.boundIndex = 0;
      // One made again is tried at once, whatever the one before it did.
      this.reopenDelayMs = 0;
      this.reopenAfter = 0;
      return;
    }
    if (performance.now() < this.reopenAfter) return;
    this.reopen(name);
  }

  /**
   * New rings on the interface of that name that appeared; the old ones go once the PMDs
   * have the new. AF_XDP: a new program first (the old one went with the old interface);
   * AF_PACKET with several queues: a new fanout group (the old sockets, bound to the
   * interface that went, are still in theirs until the PMDs let go of them). The interface
   * counts as bound once every queue has its rings: a failure is tried again at the next
   * check, and logged when it differs from the last.
   */
  private reopen(name: string): void {
    const index = interfaceIndex(name);
    const failed = (err: Error) => {
      this.reopening = false;
      this.reopenDelayMs = Math.min(REOPEN_DELAY_MAX_MS, Math.max(INTERFACE_CHECK_MS, this.reopenDelayMs * 2));
      this.reopenAfter = performance.now() + this.reopenDelayMs;
      if (err.message !== this.reopenFailure) this.log.warn(`port ${this.settings.name}: interface ${name} is back but cannot be opened (tried again after 1 s, then after twice as long each time, up to a minute): ${err.message}`, 'port.failed', { port: this.settings.name });
      this.reopenFailure = err.message;
    };
    const renewing = this.renewAll && index === this.boundIndex;
    try {
      const refusal = interfaceRefusal(this.settings);
      if (refusal !== null) throw new Error(refusal);
      interfaceUp(name);
      if (this.steering !== null) {
        const steering = xdpSteer(name, this.settings.queues);
        let hold: number;
        try {
          hold = promiscuousHold(name);
        } catch (err) {
          closeAll([steering.linkFd, steering.mapFd]);
          throw err;
        }
        closeAll([this.steering.linkFd, this.steering.mapFd, this.promiscuous]);
        this.steering = steering;
        this.promiscuous = hold;
      }
    } catch (err) {
      return failed(err as Error);
    }
    if (this.fanout !== null) this.fanout = nextFanout++ & 0xffff;
    this.reopening = true;
    this.renewAll = false;
    Promise.all(this.queues.map((_, q) => this.replaceRings(q))).then(() => {
      this.reopening = false;
      this.reopenFailure = null;
      this.reopenDelayMs = 0;
      this.boundIndex = index;
      this.log.info(`port ${this.settings.name}: ${renewing ? `interface ${name}: new rings for every queue` : `interface ${name} is back: new rings on it`}`, 'port.listening', { port: this.settings.name });
    }, (err: Error) => {
      this.renewAll = true;
      failed(err);
    });
  }

  /** Nothing of an interface's is guest memory. */
  async auditMemory(): Promise<string | null> {
    return null;
  }

  /** No frontend to turn away: a crash loop on an interface's port is logged. */
  async quarantine(why: string): Promise<void> {
    this.log.warn(`port ${this.settings.name}: blamed for a crash loop, kept (an interface's port has no frontend to turn away): ${why}`);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.checkTimer !== null) clearInterval(this.checkTimer);
    if (this.queues.length === 0) return;
    // The PMDs let go of their copies (and views of the rings) first.
    const gen = this.generation;
    await Promise.all(this.dataplane.ownersOf(this.settings.index).map((pmd) => this.dataplane.requestOn(pmd, { t: 'port-reset', port: this.settings.index, gen })));
    this.dataplane.unmap(this.queues.flatMap((q) => q.mappings));
    this.closeQueues();
  }

  /** The PMD that polls a queue: the owner of the queue pair of that number, as rxqAffinity and the layout place it. */
  private owner(queue: number): number {
    return this.dataplane.ownerOf(this.settings.index, 2 * queue);
  }

  private async handTo(pmd: number, queue: number): Promise<void> {
    if (this.stopped || this.queues[queue] === undefined) return;
    const reply = await this.dataplane.requestOn(pmd, this.queues[queue].start(this.settings.index, this.generation, queue));
    if (reply.error !== undefined && !reply.restarted) this.log.warn(`port ${this.settings.name}: pmd${pmd} did not take queue ${queue} of the interface: ${reply.error}`);
  }
}
