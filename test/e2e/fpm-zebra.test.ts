// The FPM server with a real FRR zebra (dplane_fpm_nl) and staticd, in a network namespace
// of the test's own: the static routes zebra installs arrive as nexthop objects and the
// routes that use them; withdrawn, they are removed; zebra gone, the connection is. Fails,
// saying why, where FRR (with its dplane_fpm_nl module) is not installed.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { NexthopEvent, RouteEvent } from '../../src/sys/netlink.ts';
import { FpmServer, type FpmEvent } from '../../src/uplink/fpm-server.ts';
import { waitFor } from '../support/traffic.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { adminClient } from '../support/admin-client.ts';

const FRR = '/usr/lib/frr';
const MODULE = '/usr/lib/x86_64-linux-gnu/frr/modules/dplane_fpm_nl.so';
const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const frrUser = (() => {
  try {
    return execFileSync('id', ['-u', 'frr'], { encoding: 'utf8' }).trim() !== '';
  } catch {
    return false;
  }
})();

if (!(existsSync(`${FRR}/zebra`) && existsSync(MODULE) && frrUser)) t.fail(`cannot run zebra: FRR with ${MODULE} and an frr user are needed (scripts/setup-peers.sh installs them)`);

/**
 * A namespace of the test's with up0 (10.99.0.2/30) and fpm0, a veth to the test's own
 * namespace, where the FPM server listens (serverAddress): a link-local /30 of its own.
 */
function zebraNamespace(t: Test): { ns: string; upIndex: number; serverAddress: string; zebraAddress: string } {
  const ns = `vrt-fpm-${randomBytes(4).toString('hex')}`;
  ip('netns', 'add', ns);
  t.teardown(() => ip('netns', 'del', ns));
  ip('-n', ns, 'link', 'set', 'lo', 'up');
  ip('-n', ns, 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up0p');
  ip('-n', ns, 'addr', 'add', '10.99.0.2/30', 'dev', 'up0');
  ip('-n', ns, 'link', 'set', 'up0', 'up');
  ip('-n', ns, 'link', 'set', 'up0p', 'up');
  const upIndex = Number(/^(\d+):/.exec(ip('-n', ns, '-o', 'link', 'show', 'up0'))![1]);

  const host = `vfpm${randomBytes(3).toString('hex')}`;
  const net = `169.254.${1 + Math.floor(Math.random() * 253)}.${4 * Math.floor(Math.random() * 64)}`;
  const [a, b, c, d] = net.split('.');
  const [serverAddress, zebraAddress] = [`${a}.${b}.${c}.${Number(d) + 1}`, `${a}.${b}.${c}.${Number(d) + 2}`];
  ip('link', 'add', host, 'type', 'veth', 'peer', 'name', 'fpm0', 'netns', ns);
  t.teardown(() => {
    try {
      ip('link', 'del', host);
    } catch {
      // gone with the namespace
    }
  });
  ip('addr', 'add', `${serverAddress}/30`, 'dev', host);
  ip('link', 'set', host, 'up');
  ip('-n', ns, 'addr', 'add', `${zebraAddress}/30`, 'dev', 'fpm0');
  ip('-n', ns, 'link', 'set', 'fpm0', 'up');

  return { ns, upIndex, serverAddress, zebraAddress };
}

/** zebra (sending over FPM to serverAddress:port) and staticd with these routes, in the namespace; each stopped with the test. */
function zebraDaemons(t: Test, ns: string, serverAddress: string, port: number, staticRoutes: string[]): (name: string, ...args: string[]) => ChildProcess {
  const dir = mkdtempSync(join(tmpdir(), 'vrt-fpm-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  chmodSync(dir, 0o777);
  const frr = Number(execFileSync('id', ['-u', 'frr'], { encoding: 'utf8' }));
  const frrGroup = Number(execFileSync('id', ['-g', 'frr'], { encoding: 'utf8' }));
  const config = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    chownSync(join(dir, name), frr, frrGroup);
  };
  config('zebra.conf', `fpm address ${serverAddress} port ${port}\n`);
  config('staticd.conf', [...staticRoutes, ''].join('\n'));
  const common = ['--vty_socket', dir, '-u', 'frr', '-g', 'frr', '-z', join(dir, 'zserv.api')];
  const daemon = (name: string, ...args: string[]): ChildProcess => {
    const child = spawn('ip', ['netns', 'exec', ns, `${FRR}/${name}`, '-f', join(dir, `${name}.conf`), '-i', join(dir, `${name}.pid`), '--log', `file:${join(dir, `${name}.log`)}`, ...common, ...args], { stdio: 'ignore' });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    return child;
  };
  return daemon;
}

const STATIC_ROUTES = ['ip route 10.50.0.0/16 10.99.0.1', 'ip route 10.52.0.0/16 blackhole', 'ipv6 route 2001:db8:50::/48 fe80::1 up0'];

t.test('zebra\'s routes through dplane_fpm_nl', async (t) => {
  const { ns, upIndex, serverAddress } = zebraNamespace(t);
  const events: FpmEvent[] = [];
  const server = new FpmServer({ host: serverAddress, port: 0, onEvents: (evs) => events.push(...evs), log: { info: () => {}, warn: (m) => t.comment(m) } });
  const { port } = await server.listen();
  t.teardown(() => server.close());

  const daemon = zebraDaemons(t, ns, serverAddress, port, STATIC_ROUTES);
  const zebra = daemon('zebra', '-M', 'dplane_fpm_nl');
  await waitFor('zebra to connect', () => events.some((e) => e.kind === 'sync-start'), 15_000);
  const staticd = daemon('staticd');
  const routeTo = (prefix: string, op = 'add') => events.find((e): e is RouteEvent => e.kind === 'route' && e.op === op && e.prefix === prefix);
  await waitFor('the static routes', () => routeTo('10.50.0.0/16') && routeTo('10.52.0.0/16') && routeTo('2001:db8:50::/48'), 15_000);

  const nexthop = (id: number | null) => events.find((e): e is NexthopEvent => e.kind === 'nexthop' && e.op === 'add' && e.id === id);
  const v4 = routeTo('10.50.0.0/16')!;
  t.match(v4, { family: 4, table: 254, metric: 20, type: 'unicast' }, '10.50.0.0/16 (staticd: distance 1, metric 0; zebra writes 20)');
  // zebra sends nexthop objects by default: the route names one, sent before it.
  const viaGateway = v4.nexthops.length > 0 ? v4.nexthops[0] : nexthop(v4.nhid);
  t.match(viaGateway, { via: '10.99.0.1', ifindex: upIndex }, 'through 10.99.0.1 on up0');
  t.match(routeTo('10.52.0.0/16'), { type: 'blackhole', nexthops: [] }, 'a blackhole route');
  const v6 = routeTo('2001:db8:50::/48')!;
  t.match(v6.nexthops.length > 0 ? v6.nexthops[0] : nexthop(v6.nhid), { via: 'fe80::1', ifindex: upIndex }, 'an IPv6 route through a link-local gateway');

  staticd.kill('SIGTERM');
  await waitFor('the routes withdrawn', () => routeTo('10.50.0.0/16', 'remove') && routeTo('10.52.0.0/16', 'remove') && routeTo('2001:db8:50::/48', 'remove'), 15_000);
  t.pass('staticd gone: its routes are removed');
  zebra.kill('SIGTERM');
  await waitFor('the connection to close', () => events.some((e) => e.kind === 'disconnected'), 15_000);
  t.match(events.at(-1), { kind: 'disconnected', reason: 'the peer closed the connection' }, 'zebra gone: the connection is');
  t.notOk(events.some((e) => e.kind === 'disconnected' && e !== events.at(-1)), 'no connection was closed for a bad frame');
});

t.test('vrouter with an FPM route source: zebra\'s routes are its routes, and go when zebra withdraws them', async (t) => {
  const { ns, serverAddress, zebraAddress } = zebraNamespace(t);
  const port = 20000 + Math.floor(Math.random() * 20000);
  // The gateway 10.99.0.1 is in a connected subnet of vrouter's port a. The listen address
  // is not loopback: only zebra's may connect.
  const vr = await startVrouter({
    ports: [{ name: 'a', socket: '{dir}/a.sock', addresses: ['10.99.0.254/24'] }, { name: 'b', socket: '{dir}/b.sock', addresses: ['10.98.0.1/24'] }],
    pmd: { cores: [1] },
    pipeline: ['routing'],
    routes: [{ prefix: '10.52.0.0/16', via: '10.98.0.2' }],
    routeSources: [{ type: 'fpm', listen: `${serverAddress}:${port}`, peers: [zebraAddress] }],
  });
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  const routes = async () => (await api.call('GET', '/routes')).json as { prefix: string; type: string; via?: string[]; source?: string }[];
  const until = async (what: string, probe: () => Promise<boolean>) => {
    const deadline = Date.now() + 20_000;
    while (!(await probe())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const daemon = zebraDaemons(t, ns, serverAddress, port, STATIC_ROUTES);
  const zebra = daemon('zebra', '-M', 'dplane_fpm_nl');
  const staticd = daemon('staticd');
  await until('zebra\'s route in vrouter', async () => (await routes()).some((r) => r.prefix === '10.50.0.0/16'));
  const all = await routes();
  t.match(all.find((r) => r.prefix === '10.50.0.0/16'), { type: 'fpm', via: ['10.99.0.1'], source: `fpm ${serverAddress}:${port}` }, 'a static route of zebra\'s, resolved in vrouter\'s connected subnet');
  t.same(all.filter((r) => r.prefix === '10.52.0.0/16').map((r) => r.type), ['static', 'fpm'], 'zebra\'s blackhole is listed, but the config\'s route to the prefix is the one in force');
  // Anyone else on that link is refused: from the server's own end of it, say.
  const intruder = connect({ host: serverAddress, port, localAddress: serverAddress });
  await new Promise<void>((resolve) => intruder.once('close', () => resolve()));
  const sources = (await api.call('GET', '/route-sources')).json as { source: string; state: string; routes: number; refusedConnections?: number }[];
  t.match(sources, [{ source: `fpm ${serverAddress}:${port}`, state: 'connected', refusedConnections: 1 }], 'the source is connected to zebra, and refused a connection from another address');
  staticd.kill('SIGTERM');
  await until('the routes withdrawn', async () => !(await routes()).some((r) => r.type === 'fpm'));
  t.pass('staticd gone: vrouter no longer has its routes');
  zebra.kill('SIGTERM');
  await until('the source disconnected', async () => /disconnected/.test(((await api.call('GET', '/route-sources')).json as { state: string }[])[0].state));
  t.pass('zebra gone: the source says so');
});
