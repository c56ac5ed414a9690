// Two PMDs, each owning one port: every frame crosses the SPSC ring between them, and the
// MAC learned by one PMD steers the other's frames.
import t from 'tap';
import { NET_HDR_LEN } from '../../src/virtio/constants.ts';
import { ethernetFrame, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';
const MAC_C = '52:54:00:00:00:0c';

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 3000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('frames between ports on different PMDs', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br0', rxqAffinity: { 0: 0 } },
      { name: 'b', socket: '{dir}/b.sock', bridge: 'br0', rxqAffinity: { 0: 1 } },
      { name: 'c', socket: '{dir}/c.sock', bridge: 'br0', rxqAffinity: { 0: 1 } },
    ],
    pmd: { cores: [0, 1] },
  });
  t.teardown(() => vr.stop());
  const [a, b, c] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b), await startDevice(vr.sockets.c)];
  t.teardown(() => [a, b, c].forEach((d) => d.close()));

  // b (PMD 1) broadcasts: a (PMD 0) gets it over the ring, c (PMD 1) directly; a and c learn nothing yet.
  const rxA = Array.from({ length: 40 }, () => postRxBuffer(a.rx, 2048));
  const rxC = Array.from({ length: 40 }, () => postRxBuffer(c.rx, 2048));
  const rxB = Array.from({ length: 40 }, () => postRxBuffer(b.rx, 2048));
  const broadcast = ethernetFrame('ff:ff:ff:ff:ff:ff', MAC_B, 100, 1);
  sendFrame(b.tx, broadcast);
  const atA = await until('the broadcast on a', () => a.rx.takeUsed()[0]);
  const atC = await until('the broadcast on c', () => c.rx.takeUsed()[0]);
  t.same(a.ram.bytes.slice(rxA[0].off + NET_HDR_LEN, rxA[0].off + atA.len), broadcast, 'a got the frame intact, across PMDs');
  t.same(c.ram.bytes.slice(rxC[0].off + NET_HDR_LEN, rxC[0].off + atC.len), broadcast, 'c got its own copy');

  // a (PMD 0) answers b: PMD 0 finds MAC_B in PMD 1's table, so c sees nothing.
  for (let i = 0; i < 30; i++) sendFrame(a.tx, ethernetFrame(MAC_B, MAC_A, 60 + i, i));
  let atB = 0;
  await until('30 frames on b', () => ((atB += b.rx.takeUsed().length) >= 30 ? true : undefined));
  t.equal(atB, 30, 'all 30 reached b over the ring');
  const firstPayloadBytes = rxB.slice(0, 30).map((r) => b.ram.bytes[r.off + NET_HDR_LEN + 14]);
  t.same(firstPayloadBytes, Array.from({ length: 30 }, (_, i) => i), 'in order (each frame carries its number)');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(c.rx.takeUsed().length, 0, 'no flooding to c: the destination was known');

  // c (PMD 1) to a (PMD 0), learned from the first exchange.
  sendFrame(c.tx, ethernetFrame(MAC_A, MAC_C, 64));
  await until('c to a', () => a.rx.takeUsed()[0]);
  const stats = await vr.stats();
  t.equal(stats.a.rx_packets, 30);
  t.equal(stats.b.tx_packets, 30);
  t.equal(stats.a.tx_packets, 2, 'the broadcast and the frame from c');
  t.equal(stats.c.tx_packets, 1);
  t.equal(stats.b.rx_packets, 1);
  for (const [name, s] of Object.entries(stats)) {
    t.equal(Object.values(s.drops).reduce((x, y) => x + y, 0), 0, `${name}: no drops`);
  }
});
