// The netlink watcher against the real kernel, in network namespaces of the test's own
// (removed at the end, pass or fail): what `ip` changes there arrives as the events a
// consumer should see, what was there before the start arrives in the first sync, a
// hundred thousand routes arrive (counted, timed), and notifications the kernel had to
// drop bring a full sync.
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { NetlinkWatcher, type NetlinkWatcherOptions, type WatcherEvent } from '../../src/uplink/netlink-watcher.ts';
import type { NetlinkEvent } from '../../src/sys/netlink.ts';
import { waitFor } from '../support/traffic.ts';

const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const ipAsync = promisify(execFile);

/**
 * Adds interface dummy0: of type dummy where the kernel has it, else one end of a veth pair
 * whose other end (dummy0p) is up beside it, so that dummy0 has a carrier once up.
 */
function addDummy(run: (...args: string[]) => string): void {
  try {
    run('link', 'add', 'dummy0', 'type', 'dummy');
  } catch {
    run('link', 'add', 'dummy0', 'type', 'veth', 'peer', 'name', 'dummy0p');
    run('link', 'set', 'dummy0p', 'up');
  }
}

/** A fresh network namespace with interface dummy0, up, 10.9.0.1/24; removed at teardown. */
function namespace(t: Test, setup = true): { ns: string; ifindex: number; run: (...args: string[]) => string } {
  const ns = `vrt-nl-${randomBytes(4).toString('hex')}`;
  ip('netns', 'add', ns);
  t.teardown(() => ip('netns', 'del', ns));
  const run = (...args: string[]) => ip('-n', ns, ...args);
  if (!setup) return { ns, ifindex: 0, run };
  addDummy(run);
  run('link', 'set', 'dummy0', 'up');
  run('addr', 'add', '10.9.0.1/24', 'dev', 'dummy0');
  return { ns, ifindex: Number(/^(\d+):/.exec(run('-o', 'link', 'show', 'dummy0'))![1]), run };
}

/** A started watcher and everything it delivered; stopped at teardown (before the namespace goes). */
function watch(t: Test, ns: string, options: NetlinkWatcherOptions = {}) {
  const events: WatcherEvent[] = [];
  const warnings: string[] = [];
  const watcher = new NetlinkWatcher(ns, (evs) => events.push(...evs), { log: { info: () => {}, warn: (m) => warnings.push(m) }, ...options });
  watcher.start();
  t.teardown(() => watcher.stop());
  const syncs = () => events.filter((e) => e.kind === 'sync-end').length;
  return { watcher, events, warnings, synced: (n = 1) => waitFor(`sync ${n} to end`, () => syncs() >= n, 30_000) };
}

/** The first event from index `from` on that matches, waited for. */
function next<T extends WatcherEvent>(events: WatcherEvent[], what: string, match: (e: WatcherEvent) => boolean, from = 0): Promise<T> {
  return waitFor(what, () => events.slice(from).find(match) as T | undefined, 5000);
}
const route = (op: string, prefix: string) => (e: WatcherEvent) => e.kind === 'route' && e.op === op && e.prefix === prefix;

t.test('what the namespace holds before the start arrives in the first sync', async (t) => {
  const { ns, ifindex, run } = namespace(t);
  run('route', 'add', '10.10.0.0/16', 'via', '10.9.0.2');
  run('neigh', 'add', '10.9.0.2', 'lladdr', '52:54:00:00:00:02', 'dev', 'dummy0');
  const { events, synced } = watch(t, ns);
  await synced();
  t.equal(events[0].kind, 'sync-start', 'the first event opens the sync');
  const sync = events.slice(0, events.findIndex((e) => e.kind === 'sync-end') + 1);
  t.match(sync.find((e) => e.kind === 'link' && e.name === 'dummy0'), { op: 'add', ifindex, up: true, mtu: 1500, mac: /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/ }, 'dummy0, up');
  t.match(sync.find((e) => e.kind === 'link' && e.name === 'lo'), { ifindex: 1, up: false, mac: '00:00:00:00:00:00' }, 'lo, down');
  t.same(sync.filter((e) => e.kind === 'address' && e.family === 4), [{ kind: 'address', op: 'add', family: 4, address: '10.9.0.1', prefixLength: 24, ifindex }], 'its address');
  t.same(sync.find(route('add', '10.10.0.0/16')), { kind: 'route', op: 'add', family: 4, prefix: '10.10.0.0/16', nexthops: [{ via: '10.9.0.2', ifindex, weight: 1 }], nhid: null, metric: 0, table: 254, protocol: 3, type: 'unicast' }, 'the route');
  t.match(sync.find(route('add', '10.9.0.0/24')), { nexthops: [{ via: null, ifindex }], protocol: 2, table: 254 }, 'the connected route');
  t.match(sync.find(route('add', '10.9.0.1/32')), { type: 'local', table: 255 }, 'the local route');
  t.same(sync.find((e) => e.kind === 'neighbour' && e.address === '10.9.0.2'), { kind: 'neighbour', op: 'add', family: 4, address: '10.9.0.2', mac: '52:54:00:00:00:02', ifindex, state: 0x80, flags: 0 }, 'the neighbour (permanent)');
  t.equal(sync.filter((e) => e.kind === 'sync-start').length, 1, 'one sync');
});

t.test('changes arrive as they are made: links, addresses, routes (ECMP, IPv6, nexthop objects), neighbours, and their removal', async (t) => {
  const { ns, run } = namespace(t, false);
  const { events, synced } = watch(t, ns);
  await synced();
  let mark = events.length;
  const after = <T extends WatcherEvent>(what: string, match: (e: WatcherEvent) => boolean) => next<T>(events, what, match, mark);

  addDummy(run);
  const link = await after<WatcherEvent & { kind: 'link' }>('dummy0 added', (e) => e.kind === 'link' && e.name === 'dummy0');
  const ifindex = link.ifindex;
  t.match(link, { op: 'add', up: false, mtu: 1500 }, 'dummy0 added, down');
  run('link', 'set', 'dummy0', 'up');
  t.match(await after('dummy0 up', (e) => e.kind === 'link' && e.name === 'dummy0' && e.up), { op: 'add', ifindex, up: true }, 'dummy0 up');
  run('addr', 'add', '10.9.0.1/24', 'dev', 'dummy0');
  t.same(await after('the address', (e) => e.kind === 'address' && e.address === '10.9.0.1'), { kind: 'address', op: 'add', family: 4, address: '10.9.0.1', prefixLength: 24, ifindex }, 'address added');
  t.match(await after('the connected route', route('add', '10.9.0.0/24')), { nexthops: [{ via: null, ifindex }], protocol: 2 }, 'with its connected route');

  run('route', 'add', '10.10.0.0/16', 'via', '10.9.0.2');
  const single = { kind: 'route', family: 4, prefix: '10.10.0.0/16', nexthops: [{ via: '10.9.0.2', ifindex, weight: 1 }], nhid: null, metric: 0, table: 254, protocol: 3, type: 'unicast' };
  t.same(await after('10.10.0.0/16', route('add', '10.10.0.0/16')), { ...single, op: 'add' }, 'a route through a gateway');
  run('route', 'add', '10.11.0.0/16', 'nexthop', 'via', '10.9.0.2', 'nexthop', 'via', '10.9.0.3', 'weight', '2');
  const ecmp = { kind: 'route', family: 4, prefix: '10.11.0.0/16', nexthops: [{ via: '10.9.0.2', ifindex, weight: 1 }, { via: '10.9.0.3', ifindex, weight: 2 }], nhid: null, metric: 0, table: 254, protocol: 3, type: 'unicast' };
  t.same(await after('10.11.0.0/16', route('add', '10.11.0.0/16')), { ...ecmp, op: 'add' }, 'an ECMP route, with its weights');
  run('route', 'add', 'blackhole', '10.13.0.0/16', 'metric', '50', 'table', '1000');
  t.same(await after('10.13.0.0/16', route('add', '10.13.0.0/16')), { kind: 'route', op: 'add', family: 4, prefix: '10.13.0.0/16', nexthops: [], nhid: null, metric: 50, table: 1000, protocol: 3, type: 'blackhole' }, 'a blackhole route in table 1000, metric 50');

  run('addr', 'add', '2001:db8::1/64', 'dev', 'dummy0', 'nodad');
  t.match(await after('the IPv6 address', (e) => e.kind === 'address' && e.family === 6 && e.address === '2001:db8::1'), { prefixLength: 64, ifindex }, 'an IPv6 address');
  run('-6', 'route', 'add', '2001:db8:100::/48', 'via', '2001:db8::2');
  const v6 = { kind: 'route', family: 6, prefix: '2001:db8:100::/48', nexthops: [{ via: '2001:db8::2', ifindex, weight: 1 }], nhid: null, metric: 1024, table: 254, protocol: 3, type: 'unicast' };
  t.same(await after('2001:db8:100::/48', route('add', '2001:db8:100::/48')), { ...v6, op: 'add' }, 'an IPv6 route (metric 1024, the kernel\'s default)');

  run('nexthop', 'add', 'id', '10', 'via', '10.9.0.2', 'dev', 'dummy0');
  t.same(await after('nexthop 10', (e) => e.kind === 'nexthop' && e.id === 10), { kind: 'nexthop', op: 'add', id: 10, via: '10.9.0.2', ifindex, blackhole: false, group: [] }, 'a nexthop object');
  run('nexthop', 'add', 'id', '11', 'via', '10.9.0.3', 'dev', 'dummy0');
  run('nexthop', 'add', 'id', '12', 'group', '10/11,3');
  t.same(await after('nexthop 12', (e) => e.kind === 'nexthop' && e.id === 12), { kind: 'nexthop', op: 'add', id: 12, via: null, ifindex: 0, blackhole: false, group: [{ id: 10, weight: 1 }, { id: 11, weight: 3 }] }, 'a group of two, weighted');
  run('route', 'add', '10.12.0.0/16', 'nhid', '12');
  // The kernel also writes the nexthops out (sysctl net.ipv4.nexthop_compat_mode, on by default); zebra's FPM messages carry the id alone.
  t.match(await after('10.12.0.0/16', route('add', '10.12.0.0/16')), { nhid: 12 }, 'a route through the group names it');

  run('neigh', 'add', '10.9.0.2', 'lladdr', '52:54:00:00:00:02', 'dev', 'dummy0');
  const neighbour = { kind: 'neighbour', family: 4, address: '10.9.0.2', mac: '52:54:00:00:00:02', ifindex, state: 0x80, flags: 0 };
  t.same(await after('the neighbour', (e) => e.kind === 'neighbour' && e.address === '10.9.0.2'), { ...neighbour, op: 'add' }, 'a neighbour');

  mark = events.length;
  run('route', 'del', '10.10.0.0/16');
  t.same(await after('10.10.0.0/16 removed', route('remove', '10.10.0.0/16')), { ...single, op: 'remove' }, 'the route removed');
  run('route', 'del', '10.11.0.0/16');
  t.same(await after('10.11.0.0/16 removed', route('remove', '10.11.0.0/16')), { ...ecmp, op: 'remove' }, 'the ECMP route removed');
  run('-6', 'route', 'del', '2001:db8:100::/48');
  t.same(await after('2001:db8:100::/48 removed', route('remove', '2001:db8:100::/48')), { ...v6, op: 'remove' }, 'the IPv6 route removed');
  run('route', 'del', '10.12.0.0/16');
  run('nexthop', 'del', 'id', '12');
  t.match(await after('nexthop 12 removed', (e) => e.kind === 'nexthop' && e.op === 'remove' && e.id === 12), { group: [{ id: 10 }, { id: 11 }] }, 'the nexthop group removed');
  run('neigh', 'del', '10.9.0.2', 'dev', 'dummy0');
  // Its link-layer address is not said: the kernel writes one only for a valid entry.
  t.match(await after('the neighbour removed', (e) => e.kind === 'neighbour' && e.op === 'remove'), { family: 4, address: '10.9.0.2', ifindex }, 'the neighbour removed');
  t.equal(events.filter((e) => e.kind === 'sync-start').length, 1, 'no sync after the first: nothing was lost');
  run('addr', 'del', '10.9.0.1/24', 'dev', 'dummy0');
  t.same(await after('the address removed', (e) => e.kind === 'address' && e.op === 'remove' && e.family === 4), { kind: 'address', op: 'remove', family: 4, address: '10.9.0.1', prefixLength: 24, ifindex }, 'the address removed');
  run('link', 'del', 'dummy0');
  t.match(await after('dummy0 removed', (e) => e.kind === 'link' && e.op === 'remove' && e.name === 'dummy0'), { ifindex }, 'the link removed');
});

t.test('an interface going down takes its IPv4 routes without a notification: a sync tells', async (t) => {
  const { ns, ifindex, run } = namespace(t);
  run('route', 'add', '10.10.0.0/16', 'via', '10.9.0.2');
  run('route', 'add', '10.11.0.0/16', 'nexthop', 'via', '10.9.0.2', 'nexthop', 'via', '10.9.0.3');
  const { events, synced } = watch(t, ns);
  await synced();
  const mark = events.length;
  run('link', 'set', 'dummy0', 'down');
  await synced(2);
  const later = events.slice(mark);
  t.notOk(later.some((e) => e.kind === 'route' && e.op === 'remove' && e.family === 4), 'the kernel said nothing of the IPv4 routes it removed');
  const sync = later.slice(later.findIndex((e) => e.kind === 'sync-start'));
  t.match(sync.find((e) => e.kind === 'link' && e.ifindex === ifindex), { up: false }, 'the sync that followed has dummy0 down');
  t.notOk(sync.some((e) => e.kind === 'route' && e.family === 4 && e.prefix.startsWith('10.1')), 'and neither route: a consumer sweeps them');
});

t.test('addresses added and removed through the watcher: the kernel\'s answer, errors with their errno', async (t) => {
  const { ns, ifindex } = namespace(t);
  const { watcher, events, synced } = watch(t, ns);
  await synced();
  await watcher.addAddress(ifindex, '10.9.0.5', 24);
  t.pass('10.9.0.5/24 added');
  await next(events, 'its event', (e) => e.kind === 'address' && e.op === 'add' && e.address === '10.9.0.5');
  await watcher.addAddress(ifindex, '2001:db8::5', 64);
  await next(events, 'the IPv6 one', (e) => e.kind === 'address' && e.op === 'add' && e.address === '2001:db8::5');
  await t.rejects(watcher.addAddress(ifindex, '10.9.0.5', 24), { code: 'EEXIST', message: /RTM_NEWADDR 10\.9\.0\.5\/24 on interface \d+ .*failed: EEXIST/ }, 'adding it twice: EEXIST');
  await t.rejects(watcher.removeAddress(ifindex, '10.9.0.77', 24), { code: 'EADDRNOTAVAIL' }, 'removing one that is not there: EADDRNOTAVAIL');
  await t.rejects(watcher.addAddress(999, '10.9.0.6', 24), { code: 'ENODEV' }, 'on an interface that does not exist: ENODEV');
  await t.rejects(watcher.addAddress(ifindex, 'not-an-address', 24), /"not-an-address" is not an IPv4 or IPv6 address/, 'a bad address is refused before anything is sent');
  await watcher.removeAddress(ifindex, '10.9.0.5', 24);
  t.match(await next(events, 'its removal', (e) => e.kind === 'address' && e.op === 'remove'), { address: '10.9.0.5', ifindex }, 'removed');
});

t.test('a namespace that does not exist: start() throws, naming it', async (t) => {
  const watcher = new NetlinkWatcher('vrt-nl-none', () => {}, { log: { info: () => {}, warn: () => {} } });
  t.throws(() => watcher.start(), { code: 'ENOENT', message: /\/run\/netns\/vrt-nl-none/ });
  t.throws(() => new NetlinkWatcher('../etc', () => {}).start(), /network namespace name "..\/etc"/, 'a name that is a path is refused');
});

function batchFile(t: Test, lines: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'vrt-nl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'routes');
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}
const hostRoutes = (n: number) => Array.from({ length: n }, (_, i) => `route add 20.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32 via 10.9.0.2`);

t.test('100,000 routes added with ip -batch all arrive; so do they in a first sync', async (t) => {
  const N = 100_000;
  const { ns } = namespace(t);
  const { watcher, events, synced } = watch(t, ns);
  await synced();
  const seen = new Set<string>();
  const count = (from: number) => {
    for (let i = from; i < events.length; i++) {
      const e = events[i];
      if (e.kind === 'route' && e.op === 'add' && e.prefix.startsWith('20.')) seen.add(e.prefix);
    }
    return events.length;
  };
  const file = batchFile(t, hostRoutes(N));
  let scanned = events.length;
  const started = performance.now();
  const added = ipAsync('ip', ['-n', ns, '-batch', file]);
  await waitFor(`${N} routes`, () => {
    scanned = count(scanned);
    return seen.size === N;
  }, 120_000);
  const ms = performance.now() - started;
  await added;
  t.equal(seen.size, N, `${N} routes arrived in ${ms.toFixed(0)} ms (ip -batch included), ${watcher.counters.notificationsLost} loss(es) of notifications, ${watcher.counters.syncs} sync(s)`);
  t.comment(`100,000 routes through the watcher: ${ms.toFixed(0)} ms`);

  const second = watch(t, ns);
  const syncStarted = performance.now();
  await second.synced();
  const syncMs = performance.now() - syncStarted;
  const inSync = second.events.filter((e) => e.kind === 'route' && e.prefix.startsWith('20.')).length;
  t.equal(inSync, N, `a watcher started afterwards has them all in its first sync, in ${syncMs.toFixed(0)} ms`);
  t.comment(`first sync of 100,000 routes: ${syncMs.toFixed(0)} ms`);
});

t.test('notifications the kernel drops (receive buffer full) bring a full sync that has it all', async (t) => {
  const N = 20_000;
  const { ns } = namespace(t);
  // A small buffer, and the event loop held while routes are added: it must overflow.
  const { watcher, events, warnings, synced } = watch(t, ns, { receiveBufferBytes: 64 * 1024 });
  await synced();
  const firstEnd = events.length;
  execFileSync('ip', ['-n', ns, '-batch', batchFile(t, hostRoutes(N))]);
  await synced(2);
  const resync = events.slice(firstEnd);
  const start = resync.findIndex((e) => e.kind === 'sync-start');
  const end = resync.findIndex((e) => e.kind === 'sync-end');
  t.ok(start >= 0 && end > start, 'a second sync, started and ended');
  const inSync = new Set(resync.slice(start, end).flatMap((e) => (e.kind === 'route' && e.prefix.startsWith('20.') ? [e.prefix] : [])));
  t.equal(inSync.size, N, `all ${N} routes are in it`);
  t.ok(watcher.counters.notificationsLost >= 1, `the loss was counted (${watcher.counters.notificationsLost})`);
  t.match(warnings.join('\n'), /the kernel dropped notifications \(socket receive buffer full\) in network namespace vrt-nl-\w+: everything is dumped again/, 'and logged');
});

t.test('a dump the kernel marks interrupted (NLM_F_DUMP_INTR) is asked for again alone, at once three times in a row, then once a second', async (t) => {
  // Linux 6.1 marks address dumps whose table changed between two of their reads; the
  // kernel this runs on may mark none (6.18 marks no dump the watcher makes, under any
  // churn tried), so the end of the namespace's real address dump is marked here.
  const { ns } = namespace(t);
  const events: WatcherEvent[] = [];
  const warnings: string[] = [];
  const watcher = new NetlinkWatcher(ns, (evs) => events.push(...evs), { log: { info: () => {}, warn: (m) => warnings.push(m) } });
  const inside = watcher as unknown as { dispatch(ev: NetlinkEvent): void; dumpKind: string };
  const dispatch = inside.dispatch.bind(watcher);
  const MARKED = 5;
  let marked = 0;
  const endedAt: number[] = [];
  inside.dispatch = (ev) => {
    if (ev.kind === 'done' && inside.dumpKind === 'address') {
      endedAt.push(performance.now());
      if (marked < MARKED) {
        marked++;
        return dispatch({ ...ev, interrupted: true });
      }
    }
    dispatch(ev);
  };
  watcher.start();
  t.teardown(() => watcher.stop());
  await waitFor('the sync to end', () => events.some((e) => e.kind === 'sync-end'), 10_000);
  t.equal(watcher.counters.dumpsInterrupted, MARKED, `${MARKED} interrupted dumps counted`);
  t.equal(watcher.counters.syncs, 1, 'the sync was not started over');
  t.equal(endedAt.length, MARKED + 1, 'the address dump was asked for again after each');
  const gaps = endedAt.slice(1).map((at, i) => at - endedAt[i]);
  t.ok(gaps.slice(0, 3).every((ms) => ms < 500) && gaps.slice(3).every((ms) => ms >= 900), `three times at once, then a second apart (gaps ${gaps.map((ms) => ms.toFixed(0)).join(', ')} ms)`);
  const end = events.findIndex((e) => e.kind === 'sync-end');
  const sync = events.slice(0, end);
  t.equal(sync.filter((e) => e.kind === 'sync-start').length, 1, 'one sync-start before the sync-end');
  t.ok(sync.some((e) => e.kind === 'address' && e.address === '10.9.0.1'), "the namespace's address is in the sync");
  t.ok(sync.some((e) => e.kind === 'route' && e.prefix === '10.9.0.0/24'), 'and so are the dumps after it (routes)');
  t.equal(warnings.filter((w) => /the address dump of network namespace vrt-nl-\w+ was interrupted 4 times in a row \(the table keeps changing\): asked for again every 1000 ms/.test(w)).length, 1, 'logged once');
});

t.test('stop(): no more events, pending requests rejected, and it can be called twice', async (t) => {
  const { ns, ifindex, run } = namespace(t);
  const { watcher, events, synced } = watch(t, ns);
  await synced();
  const pending = watcher.addAddress(ifindex, '10.9.0.9', 24);
  watcher.stop();
  await t.rejects(pending, /stopped/, 'a request without its answer is rejected');
  const n = events.length;
  run('route', 'add', '10.30.0.0/16', 'via', '10.9.0.2');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(events.length, n, 'nothing after stop()');
  watcher.stop();
  t.pass('a second stop() is harmless');
});
