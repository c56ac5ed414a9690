// The FRR harness on its own: two network namespaces joined by a veth pair, zebra and bgpd
// in each (AS 65001 and 65002), each announcing the subnet of a local interface. The eBGP
// session comes up, zebra puts the other side's subnet into each namespace's kernel table
// (proto bgp, via the peer), and the route goes once the peer's bgpd stops.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { frrPrerequisites, startFrr, type Frr } from '../support/frr.ts';
import { deleteNamespace } from '../support/netns.ts';

const missing = frrPrerequisites();
if (missing) t.fail(`cannot run FRR: ${missing}`);

const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** The line of `table` for `prefix`, or undefined. */
const routeTo = (table: string, prefix: string) => table.split('\n').find((l) => l.startsWith(`${prefix} `));

t.test('two FRR instances peer over a veth pair and install each other\'s subnet in the kernel', async (t) => {
  const suffix = randomBytes(3).toString('hex');
  const sides = [
    { netns: `vrfrr-a-${suffix}`, veth: `vfa${suffix}`, addr: '10.77.0.1', asn: 65001, subnet: '10.1.0.0/24', guests: '10.1.0.1/24' },
    { netns: `vrfrr-b-${suffix}`, veth: `vfb${suffix}`, addr: '10.77.0.2', asn: 65002, subnet: '10.2.0.0/24', guests: '10.2.0.1/24' },
  ] as const;
  const frr: Frr[] = [];
  // Whatever step fails: the daemons stop, then the namespaces go, and the veth pair and the
  // bridges with them.
  t.teardown(async () => {
    for (const instance of frr) await instance.stop();
    for (const s of sides) deleteNamespace(s.netns);
  });
  for (const s of sides) ip('netns', 'add', s.netns);
  const [a, b] = sides;
  ip('link', 'add', a.veth, 'netns', a.netns, 'type', 'veth', 'peer', 'name', b.veth, 'netns', b.netns);
  for (const s of sides) {
    ip('-n', s.netns, 'link', 'set', 'lo', 'up');
    ip('-n', s.netns, 'addr', 'add', `${s.addr}/30`, 'dev', s.veth);
    ip('-n', s.netns, 'link', 'set', s.veth, 'up');
    // The guests' subnet sits on an empty bridge: the test machines' kernel has no dummy
    // interfaces (CONFIG_DUMMY is not set).
    ip('-n', s.netns, 'link', 'add', 'guests', 'type', 'bridge');
    ip('-n', s.netns, 'addr', 'add', s.guests, 'dev', 'guests');
    ip('-n', s.netns, 'link', 'set', 'guests', 'up');
  }

  const started = Date.now();
  for (const [i, s] of sides.entries()) {
    const peer = sides[1 - i];
    const instance = await startFrr({
      netns: s.netns,
      name: `frr-${s.asn}`,
      asn: s.asn,
      routerId: s.addr,
      neighbours: [{ address: peer.addr, remoteAs: peer.asn }],
      networks: [s.subnet],
    });
    frr.push(instance);
  }
  const [frrA, frrB] = frr;
  const daemonsUp = Date.now() - started;
  await frrA.waitEstablished(b.addr, 30000);
  await frrB.waitEstablished(a.addr, 30000);
  const established = Date.now() - started;
  t.pass(`the session is Established both ways ${established} ms after the first zebra started (daemons up after ${daemonsUp} ms)`);
  console.log(`# FRR: daemons up in ${daemonsUp} ms, session Established ${established} ms after start`);

  // Each side's kernel gets the other's subnet from zebra, via the peer's veth address.
  for (const [i, s] of sides.entries()) {
    const other = sides[1 - i];
    let table = '';
    const learned = await poll(async () => {
      table = await frr[i].routesInKernel();
      const line = routeTo(table, other.subnet);
      return line && /proto bgp/.test(line) ? line : undefined;
    }, 10000);
    t.ok(learned, learned ? `${s.netns} has ${learned.trim()}` : `${s.netns} has no bgp route to ${other.subnet}:\n${table}${await frr[i].vtysh('show ip bgp')}`);
    t.match(learned ?? '', new RegExp(`via ${other.addr.replaceAll('.', '\\.')} dev ${s.veth}`), `${other.subnet} goes via the peer ${other.addr} on ${s.veth}`);
  }
  console.log(`# FRR: routes in both kernels ${Date.now() - started} ms after start`);

  // Stopping A's bgpd withdraws 10.1.0.0/24 from B within the hold time (3 s); a bgpd told
  // to stop sends a Cease NOTIFICATION, so B drops the session at once.
  const stopped = Date.now();
  await frrA.stopBgp();
  let tableB = '';
  const gone = await poll(async () => {
    tableB = await frrB.routesInKernel();
    return routeTo(tableB, a.subnet) ? undefined : true;
  }, 3000);
  const withdrawnMs = Date.now() - stopped;
  t.ok(gone, gone ? `${a.subnet} left ${b.netns} ${withdrawnMs} ms after A's bgpd stopped` : `${a.subnet} is still in ${b.netns} ${withdrawnMs} ms after A's bgpd stopped:\n${tableB}`);
});

/** Calls `probe` every 100 ms until it returns something, or undefined after `timeoutMs`. */
async function poll<T>(probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) return undefined;
    await new Promise((r) => setTimeout(r, 100));
  }
}
