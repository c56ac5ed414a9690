// A TAP port as the control thread runs it: vrouter creates the TAP interface (the host's
// network stack on its other side), holds its fd for as long as the port exists (the
// interface, with whatever the host configured on it, lives as long as an fd is open: a
// data plane that dies takes none of it), and hands the PMD that polls the port a copy.
import { closeAll, interfaceUp, tapOpen } from '../sys/libc.ts';
import type { Dataplane } from '../vhost/dataplane-link.ts';
import type { Logger } from '../vhost/connection.ts';
import type { EndpointSettings, PortState } from '../vhost/port-endpoint.ts';

export class TapEndpoint {
  private readonly settings: EndpointSettings;
  private readonly dataplane: Dataplane;
  private readonly log: Logger;
  private fd = -1;
  private released = false;
  private stopped = false;
  /** one per start of the interface (see PmdCommand) */
  private generation = 0;

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
    return `tap:${this.settings.interface}`;
  }

  state(): PortState {
    return { connected: this.fd >= 0, quarantinedForS: 0, device: null };
  }

  /**
   * Creates the interface, up, with the port's MTU (throws if it cannot be: a name taken by
   * an interface of another kind, no /dev/net/tun). `held`: the PMD gets it at release().
   */
  start(held = false): void {
    const name = this.settings.interface!;
    this.fd = tapOpen(name);
    try {
      interfaceUp(name, this.settings.mtu);
    } catch (err) {
      closeAll([this.fd]);
      this.fd = -1;
      throw err;
    }
    this.generation++;
    this.log.info(`port ${this.settings.name}: TAP interface ${name} up, MTU ${this.settings.mtu}`, 'port.listening', { port: this.settings.name });
    if (!held) this.release();
  }

  release(): void {
    if (this.stopped || this.released) return;
    this.released = true;
    void this.handTo(this.owner());
  }

  /** A restarted PMD, or a new data plane: the one that polls the port gets the interface again. */
  async resync(pmd: number, culprit: string | null): Promise<void> {
    if (culprit !== null) this.log.warn(`port ${this.settings.name}: pmd${pmd} died while serving it (${culprit})`);
    if (this.released && pmd === this.owner()) await this.handTo(pmd);
  }

  /** Nothing of a TAP port's is guest memory. */
  async auditMemory(): Promise<string | null> {
    return null;
  }

  /** No frontend to turn away: a crash loop on a TAP port is logged. */
  async quarantine(why: string): Promise<void> {
    this.log.warn(`port ${this.settings.name}: blamed for a crash loop, kept (a TAP port has no frontend to turn away): ${why}`);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.fd < 0) return;
    // The PMDs let go of their copy first; the interface goes with our fd.
    const gen = this.generation;
    await Promise.all(this.dataplane.ownersOf(this.settings.index).map((pmd) => this.dataplane.requestOn(pmd, { t: 'port-reset', port: this.settings.index, gen })));
    closeAll([this.fd]);
    this.fd = -1;
  }

  private owner(): number {
    return this.dataplane.ownerOf(this.settings.index, 0);
  }

  private async handTo(pmd: number): Promise<void> {
    if (this.fd < 0 || this.stopped) return;
    const reply = await this.dataplane.requestOn(pmd, { t: 'tap-start', port: this.settings.index, gen: this.generation, fd: this.fd });
    if (reply.error !== undefined && !reply.restarted) this.log.warn(`port ${this.settings.name}: pmd${pmd} did not take the interface: ${reply.error}`);
  }
}
