// Two PMDs, each owning one port: every frame crosses the SPSC ring between them, and the
// MAC learned by one PMD steers the other's frames. A port whose two queue pairs are on
// different PMDs: each pair's frames and bytes counted on it, in the endpoint and metrics.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { NET_HDR_LEN } from '../../src/virtio/constants.ts';
import { DriverQueue, ethernetFrame, postRxBuffer, sendFrame } from '../support/virtio-driver.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { startVrouter, type StartedVrouter } from '../support/vrouter-process.ts';

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';
const MAC_C = '52:54:00:00:00:0c';
const MAC_M = '52:54:00:00:00:0d';
const MAC_P = '52:54:00:00:00:0e';
const MAC_Q = '52:54:00:00:00:0f';

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
  // One long enough to be copied once: c (b's PMD) gets it straight from b's memory, a
  // (the other PMD) whole from the buffer, its rest copied in before it crossed.
  const long = ethernetFrame('ff:ff:ff:ff:ff:ff', MAC_B, 1400, 2);
  sendFrame(b.tx, long);
  const longAtA = await until('the long broadcast on a', () => a.rx.takeUsed()[0]);
  const longAtC = await until('the long broadcast on c', () => c.rx.takeUsed()[0]);
  t.same(a.ram.bytes.slice(rxA[1].off + NET_HDR_LEN, rxA[1].off + longAtA.len), long, 'a got the long frame intact, across PMDs');
  t.same(c.ram.bytes.slice(rxC[1].off + NET_HDR_LEN, rxC[1].off + longAtC.len), long, 'c got it intact from guest to guest');
  t.equal((await until('b has its TX chains back', () => (b.tx.usedIdx() === 2 ? true : undefined))), true, "b's two chains returned");

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
  t.equal(stats.a.tx_packets, 3, 'the broadcasts and the frame from c');
  t.equal(stats.c.tx_packets, 2);
  t.equal(stats.b.rx_packets, 2);
  for (const [name, s] of Object.entries(stats)) {
    t.equal(Object.values(s.drops).reduce((x, y) => x + y, 0), 0, `${name}: no drops`);
  }
});

t.test('per queue pair: the frames and bytes of each queue, on the queue they went through', async (t) => {
  // m's pair 0 is on PMD 0 with p, its pair 1 on PMD 1 with q: what m sends on a pair is
  // taken from that pair's TX queue, and what a PMD writes into m goes into the RX queue of
  // the pair it holds.
  const vr = await startVrouter({
    ports: [
      { name: 'm', socket: '{dir}/m.sock', bridge: 'br0', queues: 2, rxqAffinity: { 0: 0, 1: 1 } },
      { name: 'p', socket: '{dir}/p.sock', bridge: 'br0', rxqAffinity: { 0: 0 } },
      { name: 'q', socket: '{dir}/q.sock', bridge: 'br0', rxqAffinity: { 0: 1 } },
    ],
    pmd: { cores: [0, 1] },
  });
  t.teardown(() => vr.stop());
  const m = await startDevice(vr.sockets.m, { queuePairs: 2 });
  const [p, q] = [await startDevice(vr.sockets.p), await startDevice(vr.sockets.q)];
  t.teardown(() => [m, p, q].forEach((d) => d.close()));
  for (const rx of [m.pairs[0].rx, m.pairs[1].rx, p.rx, q.rx]) for (let i = 0; i < 40; i++) postRxBuffer(rx, 2048);
  const received = new Map<DriverQueue, number>();
  const arrived = (rx: DriverQueue, n: number) => until(`${n} frames`, () => (received.set(rx, (received.get(rx) ?? 0) + rx.takeUsed().length), received.get(rx)! >= n || undefined));

  // p and q announce themselves (a broadcast each, 64 bytes): m gets p's on pair 0, q's on pair 1.
  sendFrame(p.tx, ethernetFrame('ff:ff:ff:ff:ff:ff', MAC_P, 50));
  p.kick();
  await arrived(m.pairs[0].rx, 1);
  sendFrame(q.tx, ethernetFrame('ff:ff:ff:ff:ff:ff', MAC_Q, 50));
  q.kick();
  await arrived(m.pairs[1].rx, 1);
  // m: 10 frames of 114 bytes to p on pair 0, 20 of 214 bytes to q on pair 1.
  for (let i = 0; i < 10; i++) sendFrame(m.pairs[0].tx, ethernetFrame(MAC_P, MAC_M, 100, i));
  m.pairs[0].kick();
  for (let i = 0; i < 20; i++) sendFrame(m.pairs[1].tx, ethernetFrame(MAC_Q, MAC_M, 200, i));
  m.pairs[1].kick();
  await arrived(p.rx, 11);
  await arrived(q.rx, 21);
  // Back to m: 5 frames of 74 bytes from p (PMD 0), 7 of 94 bytes from q (PMD 1).
  for (let i = 0; i < 5; i++) sendFrame(p.tx, ethernetFrame(MAC_M, MAC_P, 60, i));
  p.kick();
  for (let i = 0; i < 7; i++) sendFrame(q.tx, ethernetFrame(MAC_M, MAC_Q, 80, i));
  q.kick();
  await arrived(m.pairs[0].rx, 6);
  await arrived(m.pairs[1].rx, 8);
  t.same([received.get(m.pairs[0].rx), received.get(m.pairs[1].rx)], [6, 8], 'm: p\'s frames on pair 0, q\'s on pair 1');

  const api = admin(vr);
  const port = await api('/ports/m');
  t.same(port.counters.queues, [
    { rx_packets: 10, rx_bytes: 10 * 114, tx_packets: 6, tx_bytes: 64 + 5 * 74 },
    { rx_packets: 20, rx_bytes: 20 * 214, tx_packets: 8, tx_bytes: 64 + 7 * 94 },
  ], 'GET /ports/m: each pair\'s frames and bytes, its two pairs only', { counters: port.counters });
  t.match(port.counters, { rx_packets: 30, tx_packets: 14 }, 'the port\'s totals are the pairs\' sums');
  const counters = await api('/counters');
  t.same(counters.p.queues, [{ rx_packets: 6, rx_bytes: 64 + 5 * 74, tx_packets: 11, tx_bytes: 10 * 114 + 64 }], 'GET /counters: p has one pair');
  const metrics = (await api('/metrics')) as string;
  for (const line of [
    'vrouter_queue_rx_packets_total{port="m",queue="0"} 10',
    'vrouter_queue_rx_packets_total{port="m",queue="1"} 20',
    `vrouter_queue_rx_bytes_total{port="m",queue="1"} ${20 * 214}`,
    'vrouter_queue_tx_packets_total{port="m",queue="0"} 6',
    'vrouter_queue_tx_packets_total{port="m",queue="1"} 8',
    `vrouter_queue_tx_bytes_total{port="m",queue="0"} ${64 + 5 * 74}`,
    'vrouter_queue_tx_packets_total{port="q",queue="0"} 21',
  ]) {
    t.ok(metrics.split('\n').includes(line), `/metrics: ${line}`);
  }
  t.notMatch(metrics, /queue="2"/, 'no series for pairs a port does not have');
  const check = spawnSync('promtool', ['check', 'metrics'], { input: metrics, encoding: 'utf8' });
  if (check.error) t.fail(`promtool cannot run (Debian package prometheus, installed by scripts/setup-peers.sh): ${check.error.message}`);
  else t.equal(check.status, 0, `promtool check metrics: ${check.stdout}${check.stderr}`);
});

/** GET requests to the daemon's admin endpoint: JSON parsed, text as it is. */
function admin(vr: StartedVrouter) {
  const dispatcher = new Agent({ connect: { socketPath: join(vr.dir, 'admin.sock') } });
  return async (path: string): Promise<any> => {
    const res = await request(`http://vrouter${path}`, { dispatcher });
    if (res.statusCode !== 200) throw new Error(`GET ${path}: ${res.statusCode} ${await res.body.text()}`);
    return String(res.headers['content-type']).startsWith('application/json') ? res.body.json() : res.body.text();
  };
}
