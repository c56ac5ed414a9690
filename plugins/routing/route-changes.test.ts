// Many route changes at once through the admin endpoint of a running vrouter: 1,000 adds
// and deletes issued at a 1 ms pace without waiting for the answers all land, the routes in
// force are exactly those expected, the tables were changed in place (no compile after the
// start), and traffic follows the routes: to an added host route, past a deleted one to
// the route that covers it, and not at all to a deleted route with nothing under it.
import t from 'tap';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { startDevice } from '../../test/support/vhost-frontend.ts';
import { waitFor } from '../../test/support/traffic.ts';
import { testGuest } from '../../test/support/test-guest.ts';
import { startVrouter } from '../../test/support/vrouter-process.ts';
import { udp4 } from '../../test/support/frames.ts';

const ROUTER = '02:00:00:00:00:01';
const GUEST_A = '52:54:00:00:00:0a';
const NEXT_HOP_2 = '52:54:00:00:00:b2';
const NEXT_HOP_3 = '52:54:00:00:00:b3';
const CHANGES = 1000;

t.test(`${CHANGES} route changes issued at once all land, and traffic follows them`, async (t) => {
  // Deleted by the changes: host routes under 203.0.0.0/16 (which stays) and /24s under
  // nothing, all via 10.0.2.3; the /16 goes via 10.0.2.2, told apart by the next hop's MAC.
  const doomed = Array.from({ length: 300 }, (_, k) => ({ prefix: k < 290 ? `203.0.${k >> 8}.${k & 255}/32` : `100.64.${k - 290}.0/24`, via: '10.0.2.3' }));
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24', '2001:db8:2::1/64'], routerMac: ROUTER },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing'],
    routes: [{ prefix: '203.0.0.0/16', via: '10.0.2.2' }, ...doomed],
    neighbours: [
      { address: '10.0.2.2', mac: NEXT_HOP_2, port: 'b' },
      { address: '10.0.2.3', mac: NEXT_HOP_3, port: 'b' },
    ],
  });
  t.teardown(() => vr.stop());
  const dispatcher = new Agent({ connect: { socketPath: join(vr.dir, 'admin.sock') }, connections: 32 });
  t.teardown(() => dispatcher.close());
  const call = async (method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown) => {
    const res = await request(`http://vrouter${path}`, { method, dispatcher, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: res.statusCode, json: (await res.body.json()) as unknown };
  };
  const compiles = () => (vr.stderr().match(/routing: \d+ routes compiled/g) ?? []).length;
  const compiledAtStart = compiles();

  // Added: host routes via 10.0.2.3, /24s via 10.0.2.2, IPv6 /48s; mixed with the deletes.
  const added = Array.from({ length: CHANGES - doomed.length }, (_, k) =>
    k % 10 === 0 ? { prefix: `2001:db8:${(0x100 + k).toString(16)}::/48`, via: '2001:db8:2::2' } : k % 4 === 0 ? { prefix: `192.0.${k >> 2}.0/24`, via: '10.0.2.2' } : { prefix: `198.51.${k >> 8}.${k & 255}/32`, via: '10.0.2.3' },
  );
  const changes = added.flatMap((route, k) => [
    () => call('POST', '/routes', route),
    ...(k < doomed.length ? [() => call('DELETE', `/routes/${encodeURIComponent(doomed[k].prefix)}`)] : []),
  ]);
  const started = performance.now();
  const answers: Promise<{ status: number }>[] = [];
  for (const change of changes) {
    answers.push(change());
    await new Promise((r) => setTimeout(r, 1));
  }
  const statuses = (await Promise.all(answers)).map((a) => a.status);
  const seconds = (performance.now() - started) / 1000;
  t.same(statuses.filter((s) => s !== 200), [], `all ${changes.length} changes answered 200, in ${seconds.toFixed(1)} s`);

  const inForce = (await call('GET', '/routes')).json as { prefix: string; type: string }[];
  const statics = inForce.filter((r) => r.type === 'static').map((r) => r.prefix).sort();
  const expected = ['203.0.0.0/16', ...added.map((r) => r.prefix)].sort();
  t.same(statics, expected, `the ${expected.length} static routes in force are those added and the one kept`);
  t.equal(compiles(), compiledAtStart, 'no compile after the start: every change was made in place');

  // Traffic from a's guest; b's guest only receives.
  const [a, b] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
  t.teardown(() => [a, b].forEach((d) => d.close()));
  const ga = testGuest(a);
  const gb = testGuest(b);
  const send = (dst: string) => ga.offer([udp4({ src: '10.0.1.2', dst, srcPort: 1, dstPort: 2, srcMac: GUEST_A, dstMac: ROUTER })]);
  const cases: [string, string, string][] = [
    ['198.51.0.1', NEXT_HOP_3, 'an added host route'],
    ['192.0.1.77', NEXT_HOP_2, 'an added /24'],
    ['203.0.0.9', NEXT_HOP_2, 'a deleted host route: the /16 that covers it'],
  ];
  for (const [dst, mac, what] of cases) {
    send(dst);
    const frame = await waitFor(`a frame to ${dst} on b`, () => gb.poll().find((f) => f.ip?.dst === dst));
    t.equal(frame.dstMac, mac, `${dst}, ${what}: to ${mac}`);
  }
  send('100.64.3.1');
  await waitFor('the no_route drop', async () => ((await vr.stats()).a.plugins.routing.drops.no_route >= 1) || undefined);
  t.pass('a deleted /24 with nothing under it: no route');
});
