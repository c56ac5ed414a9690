// A test frontend that talks to a host's IPv4 stack through vrouter (the Linux stack of a
// network namespace behind an uplink port): it asks for an address's MAC (ARP) and pings
// it, and reads what comes back on its own RX ring, parsed.
import { arp, icmp4, parseFrame, type ParsedFrame } from './frames.ts';
import { waitFor } from './traffic.ts';
import type { VirtioNetDevice } from './vhost-frontend.ts';
import { postRxBuffer, sendFrame } from './virtio-driver.ts';

export const PROBER_MAC = '02:00:00:00:00:0a';

export interface HostProber {
  /** ARP for `target` from `source`: the reply, parsed */
  resolve(target: string): Promise<ParsedFrame>;
  /** one echo request to `target` (whose MAC is `mac`), sent; `payload` bytes of ICMP data (56 as ping) */
  echoRequest(target: string, mac: string, seq: number, payload?: number): void;
  /** one echo request, and its reply, parsed */
  ping(target: string, mac: string, seq: number, payload?: number): Promise<ParsedFrame>;
}

/**
 * 64 RX buffers posted on device `dev`; the function returned takes the frames written into
 * them since it was last called, parsed, and posts their buffers again.
 */
export function rxFrames(dev: VirtioNetDevice): () => ParsedFrame[] {
  const bufferAt = new Map<number, number>();
  const post = () => {
    const { head, off } = postRxBuffer(dev.rx, 2048);
    bufferAt.set(head, off);
  };
  for (let i = 0; i < 64; i++) post();
  return () =>
    dev.rx.takeUsed().map((used) => {
      const at = bufferAt.get(used.id)! + 12;
      const frame = parseFrame(dev.ram.bytes.slice(at, at + used.len - 12));
      post();
      return frame;
    });
}

/** A prober on device `a`, with address `source`; RX buffers are posted (and replaced as used). */
export function hostProber(a: VirtioNetDevice, source: string): HostProber {
  const frames = rxFrames(a);
  const receive = (until: (f: ParsedFrame) => boolean, what: string) => waitFor(what, () => frames().find(until), 5000);
  const echoRequest = (target: string, mac: string, seq: number, payload = 56) => {
    sendFrame(a.tx, icmp4({ src: source, dst: target, srcMac: PROBER_MAC, dstMac: mac, type: 8, id: 7, seq, payload }));
    a.kick();
  };
  return {
    echoRequest,
    resolve(target) {
      sendFrame(a.tx, arp({ op: 'request', srcMac: PROBER_MAC, dstMac: 'ff:ff:ff:ff:ff:ff', senderMac: PROBER_MAC, senderIp: source, targetIp: target }));
      a.kick();
      return receive((f) => f.arp?.op === 2 && f.arp.senderIp === target, `an ARP reply from ${target}`);
    },
    ping(target, mac, seq, payload) {
      echoRequest(target, mac, seq, payload);
      return receive((f) => f.ip?.protocol === 1 && f.ip.src === target, `echo reply ${seq} from ${target}`);
    },
  };
}
