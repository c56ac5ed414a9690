// The routing plugin with routes route sources learned, as the supervisor hands them over:
// all of them when the tables are compiled whole (prepare), then the prefixes that changed
// (Plugin.routesLearned). A change costs what changed: only the prefixes told are read,
// and changed in place in the tables in use; the config's routes win for their prefixes;
// removed routes go; a whole compile (a big change, a config that changes much) keeps
// them; and after each step the tables route as a fresh compile of the same routes does.
import t from 'tap';
import routing from './index.ts';
import { openFib } from './fib.ts';
import { fibHop } from './fib-hop.ts';
import type { LearnedRoute, LearnedRoutes, PluginSetup, PortInfo, Topology } from '../../src/pipeline/api.ts';
import { LearnedRouteList } from '../../src/pipeline/testing.ts';
import type { RoutingConfig } from './config.ts';
import { prng } from '../../test/support/prng.ts';

const ports: PortInfo[] = [
  { index: 0, name: 'a', bridge: null, settings: { addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], routerMac: '02:00:00:00:0a:01', mtu: 1500 } },
  { index: 1, name: 'b', bridge: null, settings: { addresses: ['10.0.2.1/24', '2001:db8:2::1/64'], routerMac: '02:00:00:00:0b:01', mtu: 1500 } },
];
const topology: Topology = { ports, bridges: [], bridgeSettings: {}, pmdCount: 1 };
const SOURCE = 'fpm 127.0.0.1:2620';

/** The learned routes as the plugin reads them, counting the reads. */
class Counted implements LearnedRoutes {
  readonly list: LearnedRouteList;
  gets = 0;
  passes = 0;
  constructor(routes: readonly LearnedRoute[] = []) {
    this.list = new LearnedRouteList(routes);
  }
  get(prefix: string): readonly LearnedRoute[] {
    this.gets++;
    return this.list.get(prefix);
  }
  all(): Iterable<readonly LearnedRoute[]> {
    this.passes++;
    return this.list.all();
  }
}

/** A router's control plane: its shared memory, config and learned routes, kept from one change to the next as the supervisor keeps them. */
class Router {
  shared: Record<string, ArrayBufferLike>;
  config: RoutingConfig = routing.parseConfig!({}) as RoutingConfig;
  readonly learned: Counted;
  readonly log: string[] = [];

  constructor(routes: readonly LearnedRoute[] = []) {
    this.shared = Object.fromEntries(Object.entries(routing.sharedMemory!(this.config, topology)).map(([name, bytes]) => [name, new SharedArrayBuffer(bytes)]));
    this.learned = new Counted(routes);
  }

  private setup(): PluginSetup<RoutingConfig> {
    return {
      config: this.config,
      topology,
      shared: this.shared,
      fresh: () => true,
      log: { info: (m) => this.log.push(m), warn: (m) => this.log.push(m) },
      runJob: async <T>(module: string | URL, input: unknown) => ((await import(String(module))) as { default: (i: unknown) => T }).default(input),
      learnedRoutes: this.learned,
    };
  }

  /** A new config (its routes): prepare() on the kept neighbour table, as a reload. */
  async configure(routes: Record<string, unknown>[]): Promise<void> {
    this.config = routing.parseConfig!({ routes }) as RoutingConfig;
    const name = Object.keys(routing.sharedMemory!(this.config, topology))[0];
    this.shared = { [name]: this.shared[name] };
    this.shared = { ...this.shared, ...((await routing.prepare!(this.setup())) ?? {}) };
  }

  /** The route sources now hold `routes`: the plugin is told the prefixes that changed. Returns them. */
  async learn(routes: readonly LearnedRoute[]): Promise<string[]> {
    const prefixes = this.learned.list.set(routes);
    this.shared = { ...this.shared, ...((await routing.routesLearned!(this.setup(), new Set(prefixes))) ?? {}) };
    return prefixes;
  }

  /** Where the tables send an address: "none", "local", or its group's members. */
  hop(address: string): string {
    return fibHop(openFib(this.shared), address);
  }

}

const VIA = { a2: /^1 0 167772418 /, a3: /^1 0 167772419 /, b2: /^1 1 167772674 / };
const learnedVia = (prefix: string, via: string, metric = 20): LearnedRoute => ({ prefix, via: [via], metric, source: SOURCE });
/** n /24s under 100.64.0.0/10, via 10.0.1.2. */
const many = (n: number, from = 0) => Array.from({ length: n }, (_, k) => learnedVia(`100.${64 + ((from + k) >> 16)}.${((from + k) >> 8) & 255}.${(from + k) & 255}/32`, '10.0.1.2'));

t.test('a change costs what changed: the prefixes told are read, and changed in place', async (t) => {
  const routes = many(20000);
  const r = new Router(routes);
  await r.configure([]);
  t.equal(r.learned.passes, 1, 'the whole compile at the start read every learned route once');
  t.match(r.log.at(-1), /routes compiled in .* 20000 learned routes/);
  const tbl24 = r.shared['lpm4-tbl24'];
  r.learned.passes = r.learned.gets = 0;
  const next = routes.slice(3);
  next[10] = learnedVia(next[10].prefix, '10.0.2.2');
  next.push(...many(2, 30000));
  const told = await r.learn(next);
  t.equal(told.length, 6, '3 removed, 1 changed, 2 added');
  t.equal(r.learned.passes, 0, 'no pass over the learned routes');
  t.equal(r.learned.gets, 6, 'only the routes to the prefixes told were read');
  t.match(r.log.at(-1), /^6 learned route changes made in place/);
  t.equal(r.shared['lpm4-tbl24'], tbl24, 'in the tables in use');
  t.equal(r.hop('100.64.0.1'), 'none', 'a removed route is gone');
  t.match(r.hop('100.64.0.3'), VIA.a2, 'a route kept stays');
  t.match(r.hop(next[10].prefix.split('/')[0]), VIA.b2, 'a changed route takes its new gateway');
  t.match(r.hop('100.64.117.48'), VIA.a2, 'an added route is there');
  t.equal(r.learned.list.set(next).length, 0, 'nothing else changed');
});

t.test('IPv6 changes under a /16 holding many routes are compiled whole, not rebuilt in place one by one', async (t) => {
  const deep = (k: number) => learnedVia(`2001:db8:${(k >> 8).toString(16)}:${(k & 255).toString(16)}::/64`, '2001:db8:1::2');
  const table = Array.from({ length: 40_000 }, (_, k) => deep(k));
  const r = new Router(table);
  await r.configure([]);
  await r.learn(table.slice(0, 39_800));
  t.match(r.log.at(-1), /compiled/, `200 of 40,000 routes under 2001:db8::/16 withdrawn: compiled whole (${r.log.at(-1)})`);
  const address = (k: number) => deep(k).prefix.replace('::/64', '::1');
  t.equal(r.hop(address(39_950)), 'none', 'a route withdrawn is gone');
  t.match(r.hop(address(39_000)), /^1 0 /, 'the others stay');
  const other = new Router([deep(1), deep(2)]);
  await other.configure([]);
  await other.learn([deep(1)]);
  t.match(other.log.at(-1), /in place/, 'under a /16 of few routes: in place');
});

t.test('the config wins for its prefix; without it, the learned route takes the prefix back', async (t) => {
  const r = new Router([learnedVia('192.0.2.0/24', '10.0.1.2'), learnedVia('198.51.100.0/24', '10.0.1.2')]);
  await r.configure([{ prefix: '192.0.2.0/24', via: '10.0.2.2' }]);
  t.match(r.hop('192.0.2.7'), VIA.b2, 'the configured route, not the learned one');
  t.match(r.hop('198.51.100.7'), VIA.a2, 'a learned route to a prefix the config has not');
  r.learned.gets = 0;
  await r.learn([learnedVia('192.0.2.0/24', '10.0.1.3'), learnedVia('198.51.100.0/24', '10.0.1.2')]);
  t.equal(r.learned.gets, 0, 'a learned change to a configured prefix is not even read');
  t.match(r.hop('192.0.2.7'), VIA.b2, 'and changes nothing');
  await r.configure([]);
  t.match(r.log.at(-1), /^1 route changes made in place/, 'the config route removed in place');
  t.match(r.hop('192.0.2.7'), VIA.a3, 'the learned route (as it is now) takes the prefix back');
  await r.configure([{ prefix: '198.51.100.0/24', blackhole: true }]);
  t.match(r.hop('198.51.100.7'), /^2 /, 'a configured blackhole overrules a learned route added before it');
  // An interface's own routes win over both.
  await r.learn([learnedVia('192.0.2.0/24', '10.0.1.3'), learnedVia('198.51.100.0/24', '10.0.1.2'), learnedVia('10.0.2.0/24', '10.0.1.2'), learnedVia('10.0.2.1/32', '10.0.1.2')]);
  t.match(r.hop('10.0.2.9'), /^0 1 /, 'a connected subnet stays connected');
  t.equal(r.hop('10.0.2.1'), '3 -1 0 0 0 0 0 0', 'the router\'s own address stays its own');
});

t.test('removed routes go: to the covering route, or to none', async (t) => {
  const r = new Router([learnedVia('172.16.0.0/16', '10.0.1.2'), learnedVia('172.16.5.0/24', '10.0.2.2'), learnedVia('172.16.5.128/25', '10.0.1.3')]);
  await r.configure([]);
  t.match(r.hop('172.16.5.200'), VIA.a3, 'the longest prefix');
  await r.learn([learnedVia('172.16.0.0/16', '10.0.1.2'), learnedVia('172.16.5.0/24', '10.0.2.2')]);
  t.match(r.hop('172.16.5.200'), VIA.b2, 'the /25 gone: the /24');
  await r.learn([learnedVia('172.16.0.0/16', '10.0.1.2')]);
  t.match(r.hop('172.16.5.200'), VIA.a2, 'the /24 gone: the /16');
  await r.learn([{ prefix: '172.16.0.0/16', via: ['10.9.9.9'], metric: 20, source: SOURCE }]);
  t.equal(r.hop('172.16.5.200'), 'none', 'a route that no longer resolves (a gateway in no connected subnet) is no route');
  await r.learn([]);
  t.equal(r.hop('172.16.5.200'), 'none');
  t.equal(r.hop('10.0.1.9').startsWith('0 0 '), true, 'the connected routes stay');
});

t.test('a whole compile keeps the learned routes: a big learned change, a config that changes much', async (t) => {
  const r = new Router(many(1000));
  await r.configure([{ prefix: '203.0.113.0/24', via: '10.0.2.2' }]);
  const before = r.shared['lpm4-tbl24'];
  await r.learn(many(6000));
  t.match(r.log.at(-1), /routes compiled in .*6000 learned routes/, 'more changes than are made in place: compiled whole');
  t.not(r.shared['lpm4-tbl24'], before, 'into new tables');
  t.match(r.hop('203.0.113.1'), VIA.b2, 'with the config\'s routes');
  t.match(r.hop('100.64.23.111'), VIA.a2, 'and the learned ones');
  await r.configure([{ prefix: '203.0.113.0/24', via: '10.0.2.2' }, ...Array.from({ length: 5000 }, (_, k) => ({ prefix: `198.18.${k >> 8}.${k & 255}/32`, via: '10.0.1.3' }))]);
  t.match(r.log.at(-1), /routes compiled in .*6000 learned routes/, 'a config of 5,000 more routes: compiled whole, the learned routes with them');
  t.match(r.hop('100.64.23.111'), VIA.a2, 'the learned routes are still there');
  t.match(r.hop('198.18.3.7'), VIA.a3);
  await r.learn(many(6001));
  t.match(r.log.at(-1), /^1 learned route changes made in place/, 'and the next learned change is made in place in them');
  t.match(r.hop('100.64.23.112'), VIA.a2);
});

t.test('learned and config changes mixed: the tables route as a fresh compile of the same routes', async (t) => {
  for (const seed of [1, 2]) {
    const rand = prng(seed);
    const gateways4 = ['10.0.1.2', '10.0.1.3', '10.0.2.2', '10.9.9.9'];
    const gateways6 = ['2001:db8:1::2', '2001:db8:2::2'];
    const prefix = () => {
      if (rand() % 4 === 0) return `2001:db8:${(100 + (rand() % 50)).toString(16)}::/48`;
      const length = 8 + (rand() % 25);
      const a = ((rand() % 4 === 0 ? 0x0a000000 : 0x64400000) | (rand() & 0x3fffff)) >>> 0;
      const m = length === 32 ? a : (a & (-1 << (32 - length))) >>> 0;
      return `${m >>> 24}.${(m >>> 16) & 255}.${(m >>> 8) & 255}.${m & 255}/${length}`;
    };
    const route = (p: string): LearnedRoute => {
      const gws = p.includes(':') ? gateways6 : gateways4;
      const kind = rand() % 6;
      if (kind === 0) return { prefix: p, blackhole: true, metric: 20, source: SOURCE };
      if (kind === 1) return { prefix: p, via: [gws[0], gws[1]], metric: 20, source: SOURCE };
      return { prefix: p, via: [gws[rand() % gws.length]], metric: 10 + (rand() % 2) * 10, source: SOURCE };
    };
    let learned = Array.from({ length: 400 }, () => route(prefix()));
    let statics: Record<string, unknown>[] = [];
    const r = new Router(learned);
    await r.configure(statics);
    for (let step = 1; step <= 10; step++) {
      if (step % 3 === 0) {
        // A config change: some of the learned prefixes (and others) configured.
        statics = [...learned.slice(0, 20 + (rand() % 20)).map((l) => ({ prefix: l.prefix, blackhole: true })), ...Array.from({ length: rand() % 10 }, () => ({ prefix: prefix().replace(/.*:.*/, '192.0.2.0/24'), via: '10.0.2.2' }))];
        statics = [...new Map(statics.map((s) => [s.prefix, s])).values()];
        await r.configure(statics);
      } else {
        const size = step === 5 ? 5000 : 1 + (rand() % 60);
        learned = learned.filter(() => rand() % 8 !== 0);
        for (let k = 0; k < size; k++) learned.push(route(prefix()));
        await r.learn(learned);
      }
      learned = [...r.learned.list.all()].flat();
      const fresh = new Router(learned);
      await fresh.configure(statics);
      const addresses = learned.concat(statics as unknown as LearnedRoute[]).slice(-800).flatMap((l) => {
        const [address, length] = l.prefix.split('/');
        if (address.includes(':')) return [address.replace(/::$/, '::1')];
        const a = address.split('.').reduce((x, y) => x * 256 + Number(y), 0);
        const size = 2 ** (32 - Number(length));
        return [a, a + size - 1, a + size, a + (rand() % size)].map((x) => `${(x >>> 24) & 255}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`);
      });
      const wrong = addresses.filter((a) => r.hop(a) !== fresh.hop(a)).slice(0, 5).map((a) => `${a}: ${r.hop(a)}, compiled ${fresh.hop(a)}`);
      t.same(wrong, [], `seed ${seed}, step ${step}: ${learned.length} learned routes, ${statics.length} static, ${addresses.length} addresses routed as by a fresh compile (${r.log.at(-1)})`);
    }
  }
});

t.test('a listing that leaves out many routes pauses as it passes over them', async (t) => {
  const routes: LearnedRoute[] = Array.from({ length: 10_000 }, (_, k) => ({ prefix: `198.${(k >> 8) & 255}.${k & 255}.0/24`, via: ['10.0.2.2'], metric: 20, source: SOURCE }));
  const r = new Router(routes);
  await r.configure([{ prefix: '192.0.2.0/24', via: '10.0.2.3' }]);
  const view = { config: r.config, topology, shared: r.shared, learnedRoutes: r.learned };
  const list = (query: Record<string, string>) => [...routing.tables!.routes.list(view, query)];
  const statics = list({ type: 'static' });
  t.same(statics.filter((row) => row !== null).map((row) => row!.prefix), ['192.0.2.0/24'], 'the one static route');
  // Between two things yielded, a route or a pause, at most 256 routes are passed over.
  t.ok(statics.filter((row) => row === null).length >= Math.floor(10_000 / 256), `${statics.length - 1} pauses over 10,000 routes left out`);
  const far = list({ offset: '999999' });
  t.equal(far.filter((row) => row !== null).length, 0, 'an offset past the end lists nothing');
  t.ok(far.length >= Math.floor(10_000 / 256), 'and pauses on the way');
  t.same(list({ limit: '3' }).filter((row) => row !== null).length, 3, 'a limit stops the listing');
});
