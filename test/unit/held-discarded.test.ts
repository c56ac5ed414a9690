// Packets the routing stage holds while their next hop is resolved live in a PMD's own
// state. Ports changed at run time, and an upgrade, replace the PMDs: the packets held then
// are dropped and counted (held_discarded), not lost with the old PMDs, so that every frame
// taken from a port is still delivered or counted as a drop.
import t, { type Test } from 'tap';
import { adminClient } from '../support/admin-client.ts';
import { udp4 } from '../support/frames.ts';
import { waitFor } from '../support/traffic.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { sendFrame } from '../support/virtio-driver.ts';
import { startVrouter } from '../support/vrouter-process.ts';

/** Three packets from a held for hosts that never answer, then `replace` (which must replace the PMDs): each dropped, counted. */
async function heldWhenReplaced(t: Test, replace: (api: ReturnType<typeof adminClient>) => Promise<void>): Promise<void> {
  const port = (name: string, n: number) => ({ name, socket: `{dir}/${name}.sock`, addresses: [`10.0.${n}.1/24`], routerMac: `02:00:00:00:0${n}:01` });
  const vr = await startVrouter({ ports: [port('a', 1), port('b', 2), port('c', 3)], pipeline: ['routing'] });
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  const devices = [];
  for (const name of ['a', 'b', 'c']) {
    const d = await startDevice(vr.sockets[name]);
    t.teardown(() => d.close());
    devices.push(d);
  }
  // Three hosts on b's subnet that never answer: their packets are held (for up to 3 s).
  const [a] = devices;
  for (const host of [50, 51, 52]) sendFrame(a.tx, udp4({ src: '10.0.1.2', dst: `10.0.2.${host}`, srcPort: 1, dstPort: 2, srcMac: '52:54:00:00:01:02', dstMac: '02:00:00:00:01:01' }));
  a.kick();
  const routing = async () => (await vr.stats()).a.plugins.routing;
  await waitFor('three packets held', async () => ((await routing()).counters.held_for_resolution === 3) || undefined, 2000);

  await replace(api);
  const after = await routing();
  t.equal(after.drops.held_discarded, 3, 'the three held packets dropped as held_discarded');
  t.equal(after.counters.held_dropped, 3, 'and counted as held packets dropped');
  t.equal(after.drops.neighbour_unreachable, 0, 'not as unreachable: their hosts were still being asked for');
  const stats = (await vr.stats()).a;
  const drops = Object.values(stats.drops).reduce((s, n) => s + n, 0) + Object.values(stats.plugins).reduce((s, p) => s + Object.values(p.drops).reduce((x, n) => x + n, 0), 0);
  t.equal(stats.rx_packets, drops, `every frame taken from a (${stats.rx_packets}) is counted as a drop: none went anywhere, none is lost uncounted`);
}

t.test('packets held for resolution when a port is removed at run time: dropped as held_discarded, counted', (t) =>
  heldWhenReplaced(t, async (api) => {
    t.match(await api.call('DELETE', '/ports/c'), { status: 200, json: { mode: 'restart' } }, 'c removed: new PMDs');
  }),
);

t.test('packets held for resolution at an upgrade of the data plane: dropped as held_discarded, counted', (t) =>
  heldWhenReplaced(t, async (api) => {
    const upgraded = await api.call('POST', '/dataplane/upgrade');
    t.equal(upgraded.status, 200, `upgraded: new PMDs in a new data plane (${upgraded.text})`);
  }),
);
