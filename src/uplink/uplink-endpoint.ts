// A port that is a kernel interface, as the control thread runs it. A TAP port: vrouter
// creates the TAP interface (the host's network stack on its other side). An AF_PACKET
// port: vrouter opens a packet socket with memory-mapped rings on an existing interface (a
// NIC, one end of a veth pair). Either way the control thread holds the fd for as long as
// the port exists (a TAP interface lives as long as an fd is open; a socket's rings too), so
// a data plane that dies takes none of it, and hands the PMD that polls the port a copy.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { closeAll, inNetworkNamespace, interfaceIndex, interfaceUp, NETNS_DIR, packetRingBytes, packetSocket, setInterfaceMac, tapOpen, type PacketRingShape } from '../sys/libc.ts';
import type { Dataplane, PortCommand } from '../vhost/dataplane-link.ts';
import type { Logger } from '../vhost/connection.ts';
import { newRegionId } from '../vhost/memory-table.ts';
import type { EndpointSettings, PortState } from '../vhost/port-endpoint.ts';
import type { MirrorOf } from '../control/config.ts';
import { TX_DATA_OFFSET } from '../dataplane/packet-ring.ts';

/** Rings of 64 KiB blocks: 4 MiB to receive into (a burst of about 2,700 full-size frames), 1 MiB to send from. */
const BLOCK_BYTES = 1 << 16;
const RX_BLOCKS = 64;
const TX_BLOCKS = 16;
/** a receive block not full is handed over after this many ms (the latency of a lone frame) */
const RETIRE_MS = 1;
/** how often an AF_PACKET port checks that its interface is still the one it is bound to */
const INTERFACE_CHECK_MS = 1000;

/** The rings of an AF_PACKET port whose frames are at most maxFrame bytes. */
export function ringShape(maxFrame: number): PacketRingShape {
  return { blockBytes: BLOCK_BYTES, rxBlocks: RX_BLOCKS, txBlocks: TX_BLOCKS, txFrameBytes: Math.ceil((TX_DATA_OFFSET + maxFrame) / 16) * 16, retireMs: RETIRE_MS };
}

/** What tells uplinks apart: the kind, the interface and, for a mirror, its namespace. */
export function uplinkKey(e: Pick<EndpointSettings, 'type' | 'interface' | 'mirror'>): string {
  return `${e.type}:${e.mirror === null ? '' : `${e.mirror.netns}/`}${e.interface}`;
}

/** A TAP interface, with `mac` if given (set while it is down), up with the MTU: its fd. */
function openTap(name: string, mtu: number, mac: string | null): number {
  const fd = tapOpen(name);
  try {
    if (mac !== null) setInterfaceMac(name, mac);
    interfaceUp(name, mtu);
  } catch (err) {
    closeAll([fd]);
    throw err;
  }
  return fd;
}

/**
 * A port's mirror: a TAP interface in the mirror's namespace (made if there is none) with the
 * port's MAC, MTU and addresses, so that Linux there is the router on the port's link. IPv6
 * addresses skip duplicate address detection: they are the router's, already in use.
 */
function openMirror(name: string, mtu: number, mirror: MirrorOf): number {
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 5000 });
  if (!existsSync(`${NETNS_DIR}/${mirror.netns}`)) ip('netns', 'add', mirror.netns);
  const fd = inNetworkNamespace(mirror.netns, () => openTap(name, mtu, mirror.mac));
  try {
    for (const a of mirror.addresses) ip('-n', mirror.netns, 'address', 'replace', a, 'dev', name, ...(a.includes(':') ? ['nodad'] : []));
  } catch (err) {
    closeAll([fd]);
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`cannot give ${name} in ${mirror.netns} its addresses: ${stderr || (err as Error).message}`);
  }
  return fd;
}

export class UplinkEndpoint {
  private readonly settings: EndpointSettings;
  private readonly dataplane: Dataplane;
  private readonly log: Logger;
  private fd = -1;
  /** an AF_PACKET port's rings, as the data plane maps them */
  private ring: { id: number; bytes: number; shape: PacketRingShape } | null = null;
  private released = false;
  private stopped = false;
  /** the generation of the PMD commands (see PmdCommand): one per start */
  private generation = 0;
  /** AF_PACKET: the index of the interface the socket is bound to, and the timer that checks it */
  private boundIndex = 0;
  private checkTimer: NodeJS.Timeout | null = null;

  constructor(settings: EndpointSettings, dataplane: Dataplane, log: Logger) {
    this.settings = settings;
    this.dataplane = dataplane;
    this.log = log;
  }

  get name(): string {
    return this.settings.name;
  }

  /** What a change of ports matches endpoints by: two ports cannot have the same interface. */
  get key(): string {
    return uplinkKey(this.settings);
  }

  state(): PortState {
    return { connected: this.fd >= 0, quarantinedForS: 0, device: null };
  }

  /**
   * Opens the interface, up (a TAP one with the port's MTU), and throws if it cannot be
   * (no such interface, a name taken by one of another kind, no rights). `held`: the PMD
   * gets it at release().
   */
  start(held = false): void {
    const name = this.settings.interface!;
    const mirror = this.settings.mirror;
    if (this.settings.type === 'tap' && mirror !== null) {
      this.fd = openMirror(name, this.settings.mtu, mirror);
    } else if (this.settings.type === 'tap') {
      this.fd = openTap(name, this.settings.mtu, null);
    } else {
      // Up before the socket is bound: one bound to an interface that is down starts with
      // an error (ENETDOWN) that its first send reports.
      if (interfaceIndex(name) === 0) throw new Error('no interface of that name');
      interfaceUp(name);
      this.openRings();
      this.checkTimer = setInterval(() => this.checkInterface(), INTERFACE_CHECK_MS).unref();
    }
    this.generation++;
    const what =
      mirror !== null ? `Linux mirror of port ${mirror.of}: TAP interface ${name} in network namespace ${mirror.netns}, ${mirror.mac}, MTU ${this.settings.mtu}, ${mirror.addresses.join(' ')}`
      : this.settings.type === 'tap' ? `TAP interface ${name} up, MTU ${this.settings.mtu}`
      : `AF_PACKET rings on ${name} (${this.ring!.bytes >> 20} MiB)`;
    this.log.info(`port ${this.settings.name}: ${what}`, 'port.listening', { port: this.settings.name });
    if (!held) this.release();
  }

  release(): void {
    if (this.stopped || this.released) return;
    this.released = true;
    void this.handTo(this.owner());
  }

  /**
   * A restarted PMD, or a new data plane: the one that polls the port gets the interface
   * again. An AF_PACKET port gets new rings: where the dead PMD stood in the old ones (the
   * next block to read, the next slot to send from, which the kernel follows) died with it;
   * the frames it had not read yet are lost with them.
   */
  async resync(pmd: number, culprit: string | null): Promise<void> {
    if (culprit !== null) this.log.warn(`port ${this.settings.name}: pmd${pmd} died while serving it (${culprit})`);
    if (!this.released || pmd !== this.owner() || this.fd < 0) return;
    if (this.ring === null) return this.handTo(pmd);
    try {
      await this.replaceRings(pmd);
    } catch (err) {
      this.log.warn(`port ${this.settings.name}: cannot open new rings on ${this.settings.interface}: ${(err as Error).message}`);
    }
  }

  /** New rings on the interface, handed to PMD `pmd`; the old ones go once it has the new. Throws if they cannot be opened. */
  private async replaceRings(pmd: number): Promise<void> {
    const old = { fd: this.fd, id: this.ring!.id };
    this.openRings();
    await this.handTo(pmd);
    this.dataplane.unmap([old.id]);
    closeAll([old.fd]);
  }

  /** A packet socket with fresh rings on the interface (the fd and rings in force are the caller's to close). */
  private openRings(): void {
    const shape = ringShape(this.settings.mtu + 18);
    this.boundIndex = interfaceIndex(this.settings.interface!);
    this.fd = packetSocket(this.settings.interface!, shape);
    this.ring = { id: newRegionId(), bytes: packetRingBytes(shape), shape };
  }

  /**
   * An interface that went away leaves the socket bound to nothing: frames to it are
   * refused (counted). One of the same name that appears (again) gets new rings.
   */
  private checkInterface(): void {
    if (this.stopped || this.ring === null) return;
    const name = this.settings.interface!;
    const index = interfaceIndex(name);
    if (index === this.boundIndex) return;
    if (index === 0) {
      this.log.warn(`port ${this.settings.name}: interface ${name} is gone: frames to it are refused until it is back`, 'port.failed', { port: this.settings.name });
      this.boundIndex = 0;
      return;
    }
    this.reopen(name);
  }

  /** New rings on the interface of that name that appeared; the old ones go once the PMD has the new. */
  private reopen(name: string): void {
    const failed = (err: Error) => this.log.warn(`port ${this.settings.name}: interface ${name} is back but cannot be opened: ${err.message}`, 'port.failed', { port: this.settings.name });
    try {
      interfaceUp(name);
    } catch (err) {
      return failed(err as Error);
    }
    this.replaceRings(this.owner()).then(() => this.log.info(`port ${this.settings.name}: interface ${name} is back: new rings on it`, 'port.listening', { port: this.settings.name }), failed);
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
    if (this.fd < 0) return;
    // The PMDs let go of their copy (and view of the rings) first.
    const gen = this.generation;
    await Promise.all(this.dataplane.ownersOf(this.settings.index).map((pmd) => this.dataplane.requestOn(pmd, { t: 'port-reset', port: this.settings.index, gen })));
    if (this.ring !== null) this.dataplane.unmap([this.ring.id]);
    closeAll([this.fd]);
    this.fd = -1;
  }

  private owner(): number {
    return this.dataplane.ownerOf(this.settings.index, 0);
  }

  private command(): PortCommand {
    const base = { port: this.settings.index, gen: this.generation, fd: this.fd };
    return this.ring === null ? { t: 'tap-start', ...base } : { t: 'rings-start', ...base, shape: this.ring.shape, ring: { id: this.ring.id, bytes: this.ring.bytes } };
  }

  private async handTo(pmd: number): Promise<void> {
    if (this.fd < 0 || this.stopped) return;
    const reply = await this.dataplane.requestOn(pmd, this.command());
    if (reply.error !== undefined && !reply.restarted) this.log.warn(`port ${this.settings.name}: pmd${pmd} did not take the interface: ${reply.error}`);
  }
}
