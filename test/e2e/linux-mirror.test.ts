// A routed port's Linux mirror (linuxMirror, VPP's linux-cp) with a real guest behind the
// port: Linux in the mirror's namespace is the router for what vrouter does not answer
// itself (here an iperf3 server on the router's own address), and the routes installed in
// that namespace with `ip route` steer vrouter's forwarding within a second.
import { execFileSync, spawn } from 'node:child_process';
import t from 'tap';
import { bootGuest, guestPrerequisites, reachProbe } from './lib/guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { adminClient } from '../support/admin-client.ts';
import { deleteNamespace } from '../support/netns.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

t.test('Linux in the mirror namespace serves the router address, and its routes are vrouter\'s', async (t) => {
  const netns = `vrlcp${process.pid}`;
  t.teardown(() => deleteNamespace(netns));
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], linuxMirror: { netns } },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'] },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing'],
  });
  t.teardown(() => vr.stop());
  const api = adminClient(vr);

  // The mirror: a TAP interface named after the port, with its MAC, MTU and address.
  const link = JSON.parse(ip('-j', '-n', netns, 'address', 'show', 'dev', 'a'))[0];
  const port = (await api.call('GET', '/ports/a')).json as { routerMac: string };
  t.equal(link.mtu, 1500, 'the mirror has the port\'s MTU');
  t.ok(link.flags.includes('UP'), 'and is up');
  t.ok(link.addr_info.some((a: { local: string; prefixlen: number }) => a.local === '10.0.1.1' && a.prefixlen === 24), `and the port's address (${JSON.stringify(link.addr_info)})`);
  t.equal(link.address, port.routerMac, 'and the router\'s MAC on the port');

  // An iperf3 server in the namespace, on the router's own address.
  const server = spawn('ip', ['netns', 'exec', netns, 'iperf3', '-s', '-B', '10.0.1.1'], { stdio: 'ignore' });
  t.teardown(() => server.kill());

  // a answers for 10.60.0.1, which only a route installed in the namespace leads to. b
  // probes it 20 times a second and prints each change between answered and not.
  const a = bootGuest({
    name: 'lcp-a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.1.2/24' }],
    script: `
ip addr add 10.60.0.1/32 dev lo
ip route add default via 10.0.1.1
vr_ping 10.0.1.1 5 56 0.2
vr_iperf_client 10.0.1.1 3
echo VR-STEP a-ready
sleep 150`,
    timeoutS: 180,
  });
  t.teardown(() => a.kill());
  const b = bootGuest({
    name: 'lcp-b',
    nics: [{ socket: vr.sockets.b, ip: '10.0.2.2/24' }],
    script: `
ip route add default via 10.0.2.1
echo VR-STEP b-ready
${reachProbe('10.60.0.1')}
sleep 150`,
    timeoutS: 180,
  });
  t.teardown(() => b.kill());
  await a.waitForConsole(/VR-STEP a-ready/, 120_000);
  await b.waitForConsole(/VR-STEP b-ready/, 120_000);

  const timed = async (what: string, change: () => void, step: RegExp) => {
    const started = Date.now();
    change();
    await b.waitForConsole(step, 10_000);
    const ms = Date.now() - started;
    // b calls a probe unanswered after 300 ms of silence.
    t.ok(ms < 1500, `${what}: seen by the guest ${ms} ms after`);
  };
  await timed('a route added in the namespace', () => ip('-n', netns, 'route', 'add', '10.60.0.0/24', 'via', '10.0.1.2'), /VR-STEP reached/);
  const routes = (await api.call('GET', '/routes')).json as { prefix: string; type: string; via?: string[] }[];
  t.match(routes.find((r) => r.prefix === '10.60.0.0/24'), { type: 'netlink', via: ['10.0.1.2'] }, 'vrouter lists it as a netlink route');
  await timed('the route deleted there', () => ip('-n', netns, 'route', 'del', '10.60.0.0/24'), /VR-STEP unrouted/);
  a.kill();
  b.kill();
  const ra = await a.done;
  const ping = ra.results.find((r) => r.test === 'ping');
  t.equal(ping?.recv, '5', `the router's address answered the guest's pings (${JSON.stringify(ping)})`, { console: ra.console.slice(-2000) });
  const iperf = ra.results.find((r) => r.test === 'iperf3');
  t.ok(Number(iperf?.receiver_mbps) > 1, `iperf3 to the router's address, served by Linux in the mirror namespace: ${iperf?.receiver_mbps} Mbit/s`, { console: ra.console.slice(-2000) });
  const stats = (await api.call('GET', '/counters')).json;
  t.ok(stats.a.plugins.routing.counters.punted_to_linux > 100, `packets for Linux went to the mirror (${stats.a.plugins.routing.counters.punted_to_linux})`);
  t.ok(stats.a.plugins.routing.counters.sent_by_linux > 100, `and what Linux sent left through port a (${stats.a.plugins.routing.counters.sent_by_linux})`);
  t.ok(stats.b.plugins.routing.drops.no_route > 0, 'the probes without a route were counted as no_route');
});
