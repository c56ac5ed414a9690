// Live changes with vrouterctl while Linux guests ping through vrouter: a route added is
// used within a second, an ACL rule takes effect within a second, a route removed stops the
// traffic it carried, a bad request changes nothing, and the flow nobody touched loses no
// packet all along.
import t from 'tap';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { bootGuest, guestPrerequisites } from './lib/guest.ts';
import { REPO, startVrouter, type StartedVrouter } from '../support/vrouter-process.ts';

const VROUTERCTL = join(REPO, 'dist/bin/vrouterctl.js');
const run = promisify(execFile);

/** vrouterctl against the daemon's admin socket: its exit code and output. */
async function ctl(vr: StartedVrouter, ...args: string[]): Promise<{ status: number; out: string }> {
  try {
    const r = await run(process.execPath, [VROUTERCTL, '--socket', join(vr.dir, 'admin.sock'), ...args], { encoding: 'utf8' });
    return { status: 0, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

function api(vr: StartedVrouter) {
  const dispatcher = new Agent({ connect: { socketPath: join(vr.dir, 'admin.sock') } });
  return async (method: string, path: string, body?: unknown) => {
    const res = await request(`http://vrouter${path}`, { method: method as 'GET', dispatcher, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.body.text();
    return { status: res.statusCode, json: JSON.parse(text) as any };
  };
}

t.test('routes and ACL rules changed while guests ping', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'] },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'] },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing', 'acl'],
    acl: [],
  });
  t.teardown(() => vr.stop());
  const call = api(vr);
  // b also answers for 198.51.100.1, which the router has no route to yet.
  const b = bootGuest({
    name: 'b',
    nics: [{ socket: vr.sockets.b, ip: '10.0.2.2/24' }],
    script: 'ip addr add 198.51.100.1/32 dev lo && ip route add default via 10.0.2.1 && echo VR-STEP b-ready && sleep 120',
    timeoutS: 150,
  });
  t.teardown(() => b.kill());
  // a pings b all along (the flow no change touches), and tries 198.51.100.1 until it
  // answers, then until it stops answering, then until it answers again: each step is a
  // console line the test waits for.
  const a = bootGuest({
    name: 'a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.1.2/24' }],
    script: `
ip route add default via 10.0.1.1
vr_wait_peer 10.0.2.2 60
ping -c 150 -i 0.2 -W 2 10.0.2.2 > /tmp/steady 2>&1 &
steady=$!
echo VR-STEP steady-started
# One probe stream at 20 a second; a reply line means answered, 300 ms without one (or an
# error line) means not: the state machine below prints each change as it happens.
( ping -i 0.05 198.51.100.1 2>&1 & echo $! > /tmp/probe.pid; wait ) | {
  state=0
  while [ $state -lt 4 ]; do
    answered=0
    if read -t 0.3 line; then case "$line" in *"bytes from"*) answered=1 ;; PING*) continue ;; esac; fi
    case $state$answered in
      01) echo VR-STEP reached; state=1 ;;
      10) echo VR-STEP blocked; state=2 ;;
      21) echo VR-STEP reached-again; state=3 ;;
      30) echo VR-STEP unrouted; state=4 ;;
    esac
  done
  kill $(cat /tmp/probe.pid)
}
wait $steady
sent=$(sed -n 's/^\\([0-9]*\\) packets transmitted.*/\\1/p' /tmp/steady)
recv=$(sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p' /tmp/steady)
vr_result test=steady sent=$sent recv=$recv
`,
    timeoutS: 150,
  });
  t.teardown(() => a.kill());
  await b.waitForConsole(/VR-STEP b-ready/, 90_000);
  await a.waitForConsole(/VR-STEP steady-started/, 90_000);

  // A bad request: refused (exit 1, the field named), nothing changes.
  const before = (await call('GET', '/config')).json;
  const bad = await ctl(vr, 'route', 'add', '198.51.100.0/24', 'via', '10.0.9.9');
  t.equal(bad.status, 1, 'a gateway in no subnet: refused');
  t.match(bad.out, /VR_CONFIG at via/);
  t.same((await call('GET', '/config')).json, before, 'and nothing changed');
  const denyIcmp = join(vr.dir, 'deny-icmp.json');
  const noRules = join(vr.dir, 'no-rules.json');
  writeFileSync(denyIcmp, JSON.stringify([{ action: 'deny', protocol: 'icmp', dst: '198.51.100.0/24' }]));
  writeFileSync(noRules, '[]');

  const timed = async (what: string, change: () => Promise<{ status: number; out: string }>, step: RegExp) => {
    const started = Date.now();
    const res = await change();
    t.equal(res.status, 0, `${what}: done (${res.out.trim().split('\n')[0]})`);
    await a.waitForConsole(step, 10_000);
    const ms = Date.now() - started;
    // The guest probes every 50 ms and calls a probe unanswered after 300 ms; vrouterctl
    // itself takes a few hundred ms to start: 1 s is the bound for all of it.
    t.ok(ms < 1000, `${what}: seen by the guest ${ms} ms after the request`);
  };
  await timed('vrouterctl route add', () => ctl(vr, 'route', 'add', '198.51.100.0/24', 'via', '10.0.2.2'), /VR-STEP reached/);
  await timed('vrouterctl acl set (deny ICMP to it)', () => ctl(vr, 'acl', 'set', denyIcmp), /VR-STEP blocked/);
  await timed('vrouterctl acl set (no rules)', () => ctl(vr, 'acl', 'set', noRules), /VR-STEP reached-again/);
  await timed('vrouterctl route del', () => ctl(vr, 'route', 'del', '198.51.100.0/24'), /VR-STEP unrouted/);

  const [ra] = await Promise.all([a.done]);
  const steady = ra.results.find((r) => r.test === 'steady');
  t.ok(Number(steady?.sent) >= 100, `the steady flow ran all along (${steady?.sent} pings)`);
  t.equal(steady?.recv, steady?.sent, `and lost nothing: ${steady?.recv} of ${steady?.sent}`, { console: ra.console.slice(-2000) });
  const stats = (await call('GET', '/counters')).json;
  t.ok(stats.a.plugins.routing.drops.no_route > 0, 'the unrouted pings were counted as no_route');
  t.ok(stats.a.plugins.acl.drops.acl_deny > 0, 'the denied ones as acl_deny');
  const [pmd] = (await call('GET', '/pmds')).json;
  t.ok(pmd.busy_ms > 0 && pmd.busy_rounds > 0 && pmd.ns_per_packet > 0, `the PMD's load: ${pmd.busy_ms} ms busy in ${pmd.busy_rounds} rounds, ${pmd.ns_per_packet} ns per packet`);
});
