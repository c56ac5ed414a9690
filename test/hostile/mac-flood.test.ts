// A guest that floods the bridge with source MACs, or sends from MACs not its own: the other
// tenants' unicast must still reach only its destination (never flooded to the attacker),
// the attacker's learning is limited and counted, and port security drops spoofed frames.
import t from 'tap';
import { NET_HDR_LEN } from '../../src/virtio/constants.ts';
import { startDevice, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { ethernetFrame, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';
const MAC_C = '52:54:00:00:00:0c';
const MAC_H = '52:54:00:00:00:0e';
/** the default ports[].macLimit */
const MAC_LIMIT = 256;
const FLOOD = 5000;

async function waitFor(what: string, done: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Distinct unicast MACs (locally administered, 02:…): i scrambled by an odd multiplier. */
function floodMac(i: number): string {
  const x = Math.imul(i + 1, 0x9e3779b1) >>> 0;
  return ['02', '00', ...[24, 16, 8, 0].map((s) => ((x >>> s) & 0xff).toString(16).padStart(2, '0'))].join(':');
}

/** Sends frames in chunks the TX ring holds, waiting until the backend has taken each chunk. */
async function send(from: VirtioNetDevice, frames: Uint8Array[]): Promise<void> {
  for (let at = 0; at < frames.length; at += 128) {
    const chunk = frames.slice(at, at + 128);
    for (const f of chunk) sendFrame(from.tx, f);
    from.kick();
    let used = 0;
    await waitFor(`the backend to take ${chunk.length} frames`, () => (used += from.tx.takeUsed().length) >= chunk.length);
  }
}

/** Posts n RX buffers; returns a counter of the frames received in them and their source MACs. */
function receiver(dev: VirtioNetDevice, n: number): () => string[] {
  const buffers = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const { head, off } = postRxBuffer(dev.rx, 2048);
    buffers.set(head, off);
  }
  const sources: string[] = [];
  return () => {
    for (const used of dev.rx.takeUsed()) {
      const off = buffers.get(used.id)! + NET_HDR_LEN;
      sources.push([...dev.ram.bytes.subarray(off + 6, off + 12)].map((b) => b.toString(16).padStart(2, '0')).join(':'));
    }
    return sources;
  };
}

const devices = async (sockets: Record<string, string>, names: string[]) => {
  const out: Record<string, VirtioNetDevice> = {};
  for (const n of names) out[n] = await startDevice(sockets[n]);
  return out;
};

t.test('a guest flooding source MACs: unicast between the others is never flooded to it', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b', 'h', 'c'], { pmd: { cores: [1] } }));
  t.teardown(() => vr.stop());
  const { a, b, h, c } = await devices(vr.sockets, ['a', 'b', 'h', 'c']);
  t.teardown(() => [a, b, h, c].forEach((d) => d.close()));

  // a and b are known to the bridge before the flood.
  const atB0 = receiver(b, 1);
  await send(a, [ethernetFrame(MAC_B, MAC_A, 64)]);
  await waitFor('a to b', () => atB0().length === 1);
  const atA0 = receiver(a, 1);
  await send(b, [ethernetFrame(MAC_A, MAC_B, 64)]);
  await waitFor('b to a', () => atA0().length === 1);

  // h sends from 5000 MACs (more than the 4096 entries of the table) to an unknown station.
  await send(h, Array.from({ length: FLOOD }, (_, i) => ethernetFrame('02:00:00:00:00:01', floodMac(i), 46, i)));

  // c appears after the flood: its first frame must get it learned.
  const atA1 = receiver(a, 1);
  await send(c, [ethernetFrame(MAC_A, MAC_C, 64)]);
  await waitFor('c to a', () => atA1().length === 1);

  const atH = receiver(h, 100);
  const atB = receiver(b, 50);
  const atC = receiver(c, 50);
  await send(a, [...Array.from({ length: 40 }, (_, i) => ethernetFrame(MAC_B, MAC_A, 64, i)), ...Array.from({ length: 40 }, (_, i) => ethernetFrame(MAC_C, MAC_A, 64, i))]);
  await waitFor('40 frames on b and 40 on c', () => atB().length >= 40 && atC().length >= 40).catch(() => {});
  await new Promise((r) => setTimeout(r, 200)); // time for any flooded copy to arrive
  t.equal(atB().length, 40, 'b got the 40 frames sent to it, and no others');
  t.equal(atC().length, 40, 'c (first seen after the flood) got the 40 frames sent to it, and no others');
  t.equal(atH().length, 0, 'h received none of the unicast between the others');

  const stats = await vr.stats();
  t.equal(stats.h.rx_packets, FLOOD, 'every frame of the flood was taken from h');
  t.equal(stats.h.plugins.bridge.counters.mac_learning_refused, FLOOD - MAC_LIMIT, `h learned ${MAC_LIMIT} MACs (its macLimit); the source of every later frame was refused`);
  t.equal(stats.a.plugins.bridge.counters.mac_learning_refused + stats.b.plugins.bridge.counters.mac_learning_refused + stats.c.plugins.bridge.counters.mac_learning_refused, 0, 'the others learned all they sent');
  t.ok(vr.alive(), 'vrouter runs');
});

t.test('port security: frames from other source MACs are dropped and nothing is learned from them', async (t) => {
  const config = bridgeConfig(['a', 'b', 'h'], { pmd: { cores: [1] } }) as { ports: Record<string, unknown>[] };
  Object.assign(config.ports[2], { mac: MAC_H, portSecurity: true });
  const vr = await startVrouter(config);
  t.teardown(() => vr.stop());
  const { a, b, h } = await devices(vr.sockets, ['a', 'b', 'h']);
  t.teardown(() => [a, b, h].forEach((d) => d.close()));

  const atB0 = receiver(b, 1);
  await send(a, [ethernetFrame(MAC_B, MAC_A, 64)]);
  await waitFor('a to b (a learned)', () => atB0().length === 1);

  const atA = receiver(a, 100);
  const spoofed = Array.from({ length: 50 }, (_, i) => ethernetFrame(MAC_A, floodMac(i), 64, i));
  const own = Array.from({ length: 30 }, (_, i) => ethernetFrame(MAC_A, MAC_H, 64, i));
  await send(h, spoofed.flatMap((f, i) => (i < own.length ? [f, own[i]] : [f])));
  await waitFor('30 frames on a', () => atA().length >= 30).catch(() => {});
  await new Promise((r) => setTimeout(r, 200));
  t.same([...new Set(atA())], [MAC_H], "only frames from h's own MAC reached a");
  t.equal(atA().length, 30, 'all 30 of them');

  // A spoofed source was not learned: a frame to it is flooded (b gets a copy), not sent to h alone.
  const atB = receiver(b, 10);
  const atH = receiver(h, 10);
  await send(a, [ethernetFrame(floodMac(0), MAC_A, 64)]);
  await waitFor('the frame on b and h', () => atB().length === 1 && atH().length === 1);
  t.pass('a frame to a spoofed source MAC is flooded: the MAC was never learned on h');

  const stats = await vr.stats();
  t.equal(stats.h.plugins.bridge.drops.source_mac_denied, 50, 'the 50 spoofed frames counted under source_mac_denied');
  t.equal(stats.h.rx_packets, 80, 'h sent 80 frames');
  t.equal(stats.a.tx_packets, 30, 'a was given only the 30');
  t.equal(stats.h.plugins.bridge.counters.mac_learning_refused, 0);
});
