// Two vrouters, each with a guest on its own subnet, joined by an uplink veth pair (an
// AF_PACKET port on each end). FRR runs in each uplink's Linux mirror namespace: the two
// bgpd peer over the uplink, through vrouter (vrouter hands Linux the BGP session and
// sends what Linux sends), each announces its guest's subnet, zebra installs the other's
// in the namespace, and vrouter learns it there through netlink. The guests then reach
// each other; stopping one bgpd withdraws the route, and the other side's probes stop,
// counted as no_route.
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { bootGuest, guestPrerequisites, reachProbe } from './lib/guest.ts';
import { startVrouter, type StartedVrouter } from '../support/vrouter-process.ts';
import { adminClient } from '../support/admin-client.ts';
import { frrPrerequisites, startFrr, type Frr } from '../support/frr.ts';
import { deleteNamespace } from '../support/netns.ts';

const missing = guestPrerequisites() ?? frrPrerequisites();
if (missing) t.fail(`cannot run this test: ${missing}`);

const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const HOLD_S = 3;

t.test('BGP between two vrouters\' Linux mirrors routes guest to guest, and a withdrawal stops it', async (t) => {
  const tag = process.pid % 100000;
  const sides = [
    { name: 'A', netns: `vrbgpa${tag}`, veth: `vrbga${tag}`, uplink: '10.77.0.1/30', guestNet: '10.1.0', asn: 65001 },
    { name: 'B', netns: `vrbgpb${tag}`, veth: `vrbgb${tag}`, uplink: '10.77.0.2/30', guestNet: '10.2.0', asn: 65002 },
  ];
  ip('link', 'add', sides[0].veth, 'type', 'veth', 'peer', 'name', sides[1].veth);
  t.teardown(() => {
    try {
      ip('link', 'del', sides[0].veth);
    } catch {
      // already gone
    }
  });
  for (const s of sides) {
    // The host's own stack stays out of the link: only the vrouters speak on it.
    execFileSync('sysctl', ['-q', '-w', `net.ipv6.conf.${s.veth}.disable_ipv6=1`]);
    ip('link', 'set', s.veth, 'up');
    t.teardown(() => deleteNamespace(s.netns));
  }
  const vrouters: StartedVrouter[] = [];
  for (const s of sides) {
    const vr = await startVrouter({
      ports: [
        { name: 'g', socket: '{dir}/g.sock', addresses: [`${s.guestNet}.1/24`] },
        { name: 'up', type: 'af_packet', interface: s.veth, addresses: [s.uplink], linuxMirror: { netns: s.netns } },
      ],
      pmd: { cores: [1] },
      pipeline: ['routing'],
    });
    t.teardown(() => vr.stop());
    vrouters.push(vr);
  }
  const frrs: Frr[] = [];
  for (const [k, s] of sides.entries()) {
    const other = sides[1 - k];
    const frr = await startFrr({
      netns: s.netns,
      name: `bgp-${s.name}`,
      asn: s.asn,
      routerId: s.uplink.split('/')[0],
      neighbours: [{ address: other.uplink.split('/')[0], remoteAs: other.asn }],
      networks: [`${s.guestNet}.0/24`],
      holdTime: HOLD_S,
      keepalive: 1,
    });
    t.teardown(() => frr.stop());
    frrs.push(frr);
  }
  const established = await frrs[0].waitEstablished('10.77.0.2', 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\nbgpd A: ${frrs[0].logTail('bgpd', 20)}\nbgpd B: ${frrs[1].logTail('bgpd', 20)}`);
  });
  t.pass(`the BGP session between the two mirrors is established, through both vrouters (${established} ms)`);

  const guestB = bootGuest({
    name: 'bgp-b',
    nics: [{ socket: vrouters[1].sockets.g, ip: '10.2.0.2/24' }],
    script: 'ip route add default via 10.2.0.1 && echo VR-STEP b-ready && sleep 170',
    timeoutS: 200,
  });
  t.teardown(() => guestB.kill());
  // A probes B 20 times a second and prints each change between answered and not.
  const guestA = bootGuest({
    name: 'bgp-a',
    nics: [{ socket: vrouters[0].sockets.g, ip: '10.1.0.2/24' }],
    script: `
ip route add default via 10.1.0.1
echo VR-STEP a-ready
${reachProbe('10.2.0.2')}
sleep 170`,
    timeoutS: 200,
  });
  t.teardown(() => guestA.kill());
  await guestB.waitForConsole(/VR-STEP b-ready/, 120_000);
  await guestA.waitForConsole(/VR-STEP reached/, 120_000);
  t.pass('guest A reaches guest B: each vrouter routes to the other\'s subnet as BGP learned it');
  const apiA = adminClient(vrouters[0]);
  const learned = ((await apiA.call('GET', '/routes')).json as { prefix: string; type: string; via?: string[]; port?: string }[]).find((r) => r.prefix === '10.2.0.0/24');
  t.match(learned, { type: 'netlink', via: ['10.77.0.2'], port: 'up' }, 'vrouter A learned B\'s subnet from the namespace, as BGP put it there');
  t.match(await frrs[0].routesInKernel(), /10\.2\.0\.0\/24 (nhid \d+ )?via 10\.77\.0\.2 dev up proto bgp/, 'where zebra installed it');

  // Withdrawn: B's bgpd stops; A's side stops routing to B's subnet.
  const started = Date.now();
  await frrs[1].stopBgp();
  await guestA.waitForConsole(/VR-STEP unrouted/, (HOLD_S + 5) * 1000);
  const ms = Date.now() - started;
  t.ok(ms < (HOLD_S + 1) * 1000, `the guest's probes stopped ${ms} ms after B's bgpd did (hold time ${HOLD_S} s)`);
  const routes = (await apiA.call('GET', '/routes')).json as { prefix: string }[];
  t.notOk(routes.some((r) => r.prefix === '10.2.0.0/24'), 'vrouter A no longer has the route');
  const stats = (await apiA.call('GET', '/counters')).json;
  t.ok(stats.g.plugins.routing.drops.no_route > 0, `and counted the probes as no_route (${stats.g.plugins.routing.drops.no_route})`);
  t.ok(stats.up.plugins.routing.counters.punted_to_linux > 0 && stats.up.plugins.routing.counters.sent_by_linux > 0, `BGP went through the mirror both ways (${stats.up.plugins.routing.counters.punted_to_linux} in, ${stats.up.plugins.routing.counters.sent_by_linux} out)`);
});
