// The hostile-frontend suite's common ground: a daemon with two well-behaved ports (a, b)
// whose traffic must keep flowing, and hostile ports the cases attack; after each case the
// daemon must be alive, a and b must still forward, and nothing may be left behind.
import * as sys from '../../src/sys/libc.ts';
import { FLAG_NEED_REPLY, Req, VERSION } from '../../src/vhost/protocol.ts';
import { memTablePayload, PluggedRam, PROTOCOL_MQ_REPLY_ACK_STATUS, startDevice, u32pair, u64, VhostFrontend, vringAddrPayload, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { DriverQueue, GuestRam } from '../support/virtio-driver.ts';
import { NET_HDR_LEN, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_WRITE } from '../../src/virtio/constants.ts';
import { blockingEventfd, pipe } from '../support/raw-fds.ts';
import { processResources, trafficFlows, type ProcessResources } from '../support/traffic.ts';
import { startVrouter, type StartedVrouter } from '../support/vrouter-process.ts';
import { arp, udp4 } from '../support/frames.ts';
import type { TestGuest } from '../support/test-guest.ts';
import { waitFor } from '../support/traffic.ts';

export const MAC_A = '52:54:00:00:00:0a';
export const MAC_B = '52:54:00:00:00:0b';

export interface Neighbours {
  vr: StartedVrouter;
  a: VirtioNetDevice;
  b: VirtioNetDevice;
  /** what the daemon held with a and b connected: hostile connections must give it all back */
  baseline: ProcessResources;
  /** frames a -> b and back: both must all arrive */
  stillForward(frames?: number): Promise<boolean>;
  close(): Promise<void>;
}

/** vrouter with ports a and b (connected, forwarding) and the named hostile ports, one bridge. */
export async function withNeighbours(hostile: string[], extra: { pmd?: object; ports?: Record<string, object> } = {}): Promise<Neighbours> {
  const names = ['a', 'b', ...hostile];
  const ports = names.map((name) => ({ name, socket: `{dir}/${name}.sock`, bridge: 'br0', ...(extra.ports?.[name] ?? {}) }));
  const vr = await startVrouter({ ports, pmd: extra.pmd ?? { cores: [1] } });
  const a = await startDevice(vr.sockets.a);
  const b = await startDevice(vr.sockets.b);
  const stillForward = async (frames = 64) =>
    (await trafficFlows(a, b, frames, MAC_A, MAC_B)) === frames && (await trafficFlows(b, a, frames, MAC_B, MAC_A)) === frames;
  // Learns both MACs; a base that does not forward would make every attack's check meaningless.
  if (!(await stillForward())) {
    a.close();
    b.close();
    await vr.stop();
    throw new Error('a and b do not forward each other\'s frames before any attack');
  }
  return {
    vr,
    a,
    b,
    baseline: processResources(vr.proc.pid!),
    stillForward,
    async close() {
      a.close();
      b.close();
      await vr.stop();
    },
  };
}

/**
 * Port h of `n` attached with memory slots (ADD_MEM_REG, REM_MEM_REG), and 2 MiB of RAM it
 * may plug in at guest address 1 GiB; both closed at the test's end.
 */
export async function pluggingGuest(t: { teardown(fn: () => void): void }, n: Neighbours): Promise<{ h: VirtioNetDevice; dimm: PluggedRam }> {
  const h = await startDevice(n.vr.sockets.h, { memorySlots: true });
  const dimm = new PluggedRam(2 << 20, 0x40000000, 0x7f1000000000);
  t.teardown(() => {
    h.close();
    dimm.close();
  });
  return { h, dimm };
}

/** A frontend that negotiated REPLY_ACK: refused requests are answered, not disconnected. */
export async function ackingFrontend(path: string): Promise<VhostFrontend> {
  const fe = await VhostFrontend.connect(path);
  fe.send(Req.GET_PROTOCOL_FEATURES);
  await fe.replyU64();
  fe.send(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_MQ_REPLY_ACK_STATUS));
  return fe;
}

/**
 * One pass over the control-path attacks of this suite against one port's socket: fds of
 * the wrong kind, memory tables too big or that do not fit, set-ups cut short, replies
 * never read. Each case closes its own connection; the daemon must carry on.
 */
export async function controlPathAttacks(socket: string): Promise<void> {
  const ram = new GuestRam();
  const q = new DriverQueue(ram, 256, { eventIdx: true });
  const sparse = sys.memfdCreate('sparse');
  sys.ftruncate(sparse, 2 ** 42);
  const [pipeRead, pipeWrite] = pipe();
  const blocking = blockingEventfd();
  const ask = VERSION | FLAG_NEED_REPLY;
  const table = memTablePayload([{ gpa: ram.gpaBase, size: ram.size, uva: ram.uvaBase, offset: 0 }]);
  const attacks: ((fe: VhostFrontend) => Promise<void> | void)[] = [
    async (fe) => {
      for (const fd of [pipeRead, blocking, ram.fd]) await fe.request(Req.SET_VRING_KICK, u64(1), [fd]);
    },
    (fe) => fe.send(Req.SET_VRING_CALL, u64(0), [pipeWrite]),
    (fe) => fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 2 ** 42, uva: 0, offset: 0 }]), [sparse]).then(() => undefined),
    (fe) => fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 4097, uva: 0, offset: 0 }]), [ram.fd]).then(() => undefined),
    (fe) => {
      const l = q.layout();
      fe.send(Req.SET_FEATURES, u64((1n << 32n) | (1n << 30n) | (1n << 15n)), [], ask);
      fe.send(Req.SET_MEM_TABLE, table, [ram.fd], ask);
      fe.send(Req.SET_VRING_NUM, u32pair(1, 256), [], ask);
      fe.send(Req.SET_VRING_ADDR, vringAddrPayload(1, l.descAddr, l.usedAddr, l.availAddr), [], ask);
      fe.send(Req.SET_VRING_KICK, u64(1), [blocking], ask);
    },
    (fe) => {
      for (let i = 0; i < 2000; i++) fe.send(Req.SET_VRING_NUM, u32pair(9, 256), [], ask);
    },
    (fe) => fe.send(Req.GET_FEATURES, new Uint8Array(0), [], VERSION | 0x100),
  ];
  try {
    for (const attack of attacks) {
      const fe = await ackingFrontend(socket);
      try {
        await attack(fe);
      } catch {
        // the daemon closed the connection: one of the right answers
      }
      fe.close();
    }
  } finally {
    ram.close();
    sys.closeAll([sparse, pipeRead, pipeWrite, blocking]);
  }
}

/**
 * A guest that attacks through its queues until `until()` says stop: frames from thousands
 * of random source MACs, TX chains of zero-length indirect descriptors, and receive queues
 * stuffed with buffers far too small for a frame. Returns the rounds it made.
 */
export async function dataPathAttacks(socket: string, until: () => boolean): Promise<number> {
  const h = await startDevice(socket, { queueSize: 1024 });
  let rounds = 0;
  try {
    const random = (n: number) => Math.floor(Math.random() * n);
    const { tx, rx, ram } = h;
    // Everything lives in guest RAM allocated once; descriptor slots are rewritten in
    // turn, never more than 900 of 1024 outstanding (the daemon returns TX chains in order).
    const frames = Array.from({ length: 64 }, () => {
      const off = ram.alloc(NET_HDR_LEN + 64);
      ram.bytes.fill(0, off, off + NET_HDR_LEN);
      return off;
    });
    const tiny = ram.alloc(64);
    const zeroTable = tx.addZeroLengthIndirectChain(1024);
    const o = tx.descOff + 16 * zeroTable;
    const zeroChain = { addr: ram.dv.getUint32(o, true) + ram.dv.getUint32(o + 4, true) * 2 ** 32, len: 16 * 1024, flags: VIRTQ_DESC_F_INDIRECT, next: 0 };
    let txSlot = 1;
    let rxSlot = 0;
    const txRoom = () => ((tx.availIdx - tx.lastUsedIdx) & 0xffff) < 900;
    while (!until()) {
      tx.takeUsed();
      rx.takeUsed();
      for (let i = 0; i < 64 && txRoom(); i++) {
        // A random source (the MAC table) to a random unicast destination (flooded to every other port).
        const off = frames[i];
        for (let b = 0; b < 12; b++) ram.bytes[off + NET_HDR_LEN + b] = random(256);
        ram.bytes[off + NET_HDR_LEN] &= 0xfe;
        ram.bytes[off + NET_HDR_LEN + 6] &= 0xfe;
        ram.dv.setUint16(off + NET_HDR_LEN + 12, 0x0800);
        tx.writeDesc(txSlot, { addr: ram.gpa(off), len: NET_HDR_LEN + 64, flags: 0, next: 0 });
        tx.makeAvailable(txSlot);
        txSlot = (txSlot + 1) % tx.size;
      }
      if (txRoom()) {
        tx.writeDesc(txSlot, zeroChain);
        tx.makeAvailable(txSlot);
        txSlot = (txSlot + 1) % tx.size;
      }
      // Receive buffers of 4 bytes: nothing fits, the header included.
      for (let i = 0; i < 32 && ((rx.availIdx - rx.lastUsedIdx) & 0xffff) < 900; i++) {
        rx.writeDesc(rxSlot, { addr: ram.gpa(tiny), len: 4, flags: VIRTQ_DESC_F_WRITE, next: 0 });
        rx.makeAvailable(rxSlot);
        rxSlot = (rxSlot + 1) % rx.size;
      }
      h.kick();
      rounds++;
      await new Promise((r) => setTimeout(r, 5));
    }
  } finally {
    h.close();
  }
  return rounds;
}

/** The router's MACs on routed ports a (10.0.1.1/24), b (10.0.2.1/24) and h, and their guests'. */
export const ROUTER = { a: '02:00:00:00:0a:01', b: '02:00:00:00:0b:01', h: '02:00:00:00:0e:01' };
export const GUEST = { a: '52:54:00:00:00:0a', b: '52:54:00:00:00:0b', h: '52:54:00:00:00:0e' };

/**
 * Guest a (10.0.1.2) learns the router and guest b (10.0.2.2) answers the router's ARP, so
 * that a's packets reach b routed. Returns a check: n more packets a -> b
 * arrive routed (TTL 63, header checksum right, from the router's MAC), within 5 s.
 */
export async function routedAtoB(ga: TestGuest, gb: TestGuest): Promise<(n: number) => Promise<boolean>> {
  await ga.send([arp({ op: 'request', senderMac: GUEST.a, senderIp: '10.0.1.2', targetIp: '10.0.1.1', srcMac: GUEST.a })]);
  await waitFor('the ARP reply on a', () => ga.poll().find((f) => f.arp?.op === 2));
  const toB = (n: number) => Array.from({ length: n }, (_, k) => udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 1000 + k, dstPort: 9, payload: 64, srcMac: GUEST.a, dstMac: ROUTER.a }));
  await ga.send(toB(1));
  const request = await waitFor('the router\'s ARP request on b', () => gb.poll().find((f) => f.arp?.op === 1 && f.arp.targetIp === '10.0.2.2'));
  if (request.arp?.senderIp !== '10.0.2.1') throw new Error(`the router asked from ${request.arp?.senderIp}, not its address 10.0.2.1`);
  await gb.send([arp({ op: 'reply', senderMac: GUEST.b, senderIp: '10.0.2.2', targetMac: ROUTER.b, targetIp: '10.0.2.1', dstMac: ROUTER.b, srcMac: GUEST.b })]);
  await waitFor('the held packet on b', () => gb.poll().some((f) => f.ip?.dst === '10.0.2.2'));
  const routedToB = () => gb.poll().filter((f) => f.ip?.dst === '10.0.2.2' && f.ip.ttl === 63 && f.ip.headerChecksumOk && f.srcMac === ROUTER.b).length;
  return async (n: number) => {
    const before = routedToB();
    await ga.send(toB(n));
    await waitFor(`${n} routed packets on b`, () => routedToB() - before >= n || undefined, 5000);
    return true;
  };
}
