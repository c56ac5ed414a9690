// Routes changed while vrouter forwards: SIGHUP with a new config compiles the new table in
// the job pool and the PMDs switch to it between two bursts. Traffic never stops, no PMD
// restarts, learned neighbours stay; a bad config or one that moves the PMDs to other CPUs
// is refused and the running routes stay.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDevice } from '../../test/support/vhost-frontend.ts';
import { waitFor } from '../../test/support/traffic.ts';
import { testGuest } from '../../test/support/test-guest.ts';
import { startVrouter } from '../../test/support/vrouter-process.ts';
import { arp, udp4 } from '../../test/support/frames.ts';

const ROUTER = '02:00:00:00:00:01';
const GUEST_A = '52:54:00:00:00:0a';
const GUEST_B = '52:54:00:00:00:0b';

t.test('routes swapped live', async (t) => {
  const config = (extraRoutes: object[]) => ({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'], routerMac: ROUTER },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing'],
    routes: [{ prefix: '192.0.2.0/24', via: '10.0.2.2' }, ...extraRoutes],
  });
  const vr = await startVrouter(config([]));
  t.teardown(() => vr.stop());
  const path = join(vr.dir, 'config.json');
  const write = (c: object) => writeFileSync(path, JSON.stringify(c).replaceAll('{dir}', vr.dir));
  const [a, b] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
  t.teardown(() => [a, b].forEach((d) => d.close()));
  const rb = testGuest(b);
  const ra = testGuest(a);
  // b's guest answers the router's ARP once: a learned (dynamic) neighbour.
  const send = (dst: string, n: number) => ra.offer(Array.from({ length: n }, () => udp4({ src: '10.0.1.2', dst, srcPort: 1, dstPort: 2, srcMac: GUEST_A, dstMac: ROUTER })));
  send('192.0.2.1', 1);
  await waitFor('the ARP request on b', () => rb.poll().find((f) => f.arp?.op === 1));
  rb.offer([arp({ op: 'reply', senderMac: GUEST_B, senderIp: '10.0.2.2', targetMac: ROUTER, targetIp: '10.0.2.1', dstMac: ROUTER })]);
  await waitFor('the held packet', () => rb.poll().some((f) => f.ip?.dst === '192.0.2.1'));
  const arpsBefore = rb.got.filter((f) => f.arp?.op === 1).length;

  send('198.51.100.1', 4);
  await waitFor('no_route drops', async () => ((await vr.stats()).a.plugins.routing.drops.no_route >= 4) || undefined);

  // 100,000 more routes: the compile takes a while, and traffic must flow all along.
  const filler = Array.from({ length: 100_000 }, (_, k) => ({ prefix: `10.${100 + (k >> 16)}.${(k >> 8) & 0xff}.${k & 0xff}/32`, via: '10.0.2.2' }));
  write(config([{ prefix: '198.51.100.0/24', via: '10.0.2.2' }, ...filler]));
  const from = vr.stderr().length;
  vr.proc.kill('SIGHUP');
  let sent = 0;
  const started = performance.now();
  while (!/pmd0: plugin routing: new config and tables in use/.test(vr.stderr().slice(from))) {
    sent += send('192.0.2.1', 8);
    rb.poll();
    ra.poll();
    if (performance.now() - started > 20_000) break;
    await new Promise((r) => setTimeout(r, 2));
  }
  /** when each frame to 192.0.2.1 arrived on b since `started` */
  const arrivals = () => rb.at.filter((at, k) => at >= started && rb.got[k].ip?.dst === '192.0.2.1');
  const window = arrivals();
  const gaps = window.slice(1).map((at, k) => at - window[k]);
  t.match(vr.stderr().slice(from), /reloaded from .*\(SIGHUP\): new config for routing \(routes \+100001 -0\); the PMDs take the new tables between bursts/, 'taken live');
  t.match(vr.stderr().slice(from), /pmd0: plugin routing: new config and tables in use/, 'the PMD switched between bursts');
  t.ok(window.length > 0, `traffic flowed during the reload (${window.length} of ${sent} frames, ${(performance.now() - started).toFixed(0)} ms)`);
  // Gaps are seen by this process, which shares two CPUs with the supervisor parsing the
  // 100,000 routes: the bound is loose; that every frame arrives is the strict check.
  t.ok(Math.max(0, ...gaps) < 1000, `longest gap seen while the table compiled and swapped: ${Math.max(0, ...gaps).toFixed(1)} ms`);
  await waitFor('every frame sent during the reload', () => (rb.poll(), arrivals().length >= sent) || undefined, 5000);
  t.pass(`all ${sent} frames sent during the reload were routed`);
  send('198.51.100.1', 4);
  await waitFor('the new route used', () => rb.poll().some((f) => f.ip?.dst === '198.51.100.1'));
  t.pass('198.51.100.1 is routed to b after the reload');
  send('10.100.1.7', 1);
  await waitFor('a filler route used', () => rb.poll().some((f) => f.ip?.dst === '10.100.1.7'));
  t.equal(rb.got.filter((f) => f.arp?.op === 1).length, arpsBefore, 'the learned neighbour stayed: no new ARP request');
  t.notMatch(vr.stderr().slice(from), /resumed|restarting the PMDs/, 'no PMD restarted');

  const refused = vr.stderr().length;
  write(config([{ prefix: '198.51.100.0/24', via: '172.16.0.1' }]));
  vr.proc.kill('SIGHUP');
  await waitFor('the refusal', () => /not reloaded, the running config and plugins stay: routes\[1\]\.via/.test(vr.stderr().slice(refused)) || undefined, 10_000);
  write({ ...config([]), pmd: { cores: [0] } });
  vr.proc.kill('SIGHUP');
  await waitFor('the refusal of a change of PMD CPUs', () => /not reloaded, the running config and plugins stay: pmd: changing it needs a restart of vrouter/.test(vr.stderr().slice(refused)) || undefined, 10_000);
  send('198.51.100.1', 1);
  const before = rb.got.length;
  await waitFor('the running routes still used', () => rb.poll().slice(before).some((f) => f.ip?.dst === '198.51.100.1'));
  t.pass('after both refusals the routes of the last good reload still route');
  t.ok(vr.alive());
});
