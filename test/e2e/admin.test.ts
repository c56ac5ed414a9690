// Live changes with vrouterctl while Linux guests ping through vrouter: a route added is
// used within a second, an ACL rule takes effect within a second, a route removed stops the
// traffic it carried, a bad request changes nothing, and the flow nobody touched loses no
// packet all along. A capture taken meanwhile with `vrouterctl capture -w`, read by tshark,
// shows the pings and replies both ways with what routing and the ACL did to each.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, guestPrerequisites, STEADY_PING_RESULT, steadyPing } from './lib/guest.ts';
import { VROUTERCTL, vrouterctl as ctl } from './lib/vrouterctl.ts';
import { adminClient } from '../support/admin-client.ts';
import { daemonEnv, startVrouter, type StartedVrouter } from '../support/vrouter-process.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

/**
 * `vrouterctl capture` running in the background, as an operator starts it (Ctrl-C ends
 * it); resolves once it captures.
 */
async function startCapture(vr: StartedVrouter, ...args: string[]) {
  const child = spawn(process.execPath, [VROUTERCTL, '--socket', join(vr.dir, 'admin.sock'), 'capture', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: daemonEnv() });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 10_000;
  while (!/capturing on port/.test(stderr)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`vrouterctl capture did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    stderr: () => stderr,
    /** Ctrl-C; resolves with the exit status */
    stop: () => (child.kill('SIGINT'), exit),
    kill: () => void (child.exitCode === null && child.kill('SIGKILL')),
  };
}

interface Captured {
  comments: string[];
  /** the XDP action of the verdict option: 1 drop, 4 to another port; '' for frames written to the port */
  xdp: string;
  direction: 'in' | 'out';
  src: string;
  dst: string;
  icmpType: string;
}

/** The packets of a pcapng file as tshark reads them: EPB comments, verdict, direction, addresses. */
function tshark(file: string): Captured[] {
  const fields = ['frame.comment', 'frame.verdict.ebpf_xdp', 'frame.packet_flags_direction', 'ip.src', 'ip.dst', 'icmp.type'];
  const out = spawnSync('tshark', ['-r', file, '-T', 'fields', ...fields.flatMap((f) => ['-e', f]), '-E', 'occurrence=a', '-E', 'aggregator=|', '-E', 'separator=\t'], { encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`tshark failed: ${out.stderr}`);
  // An ICMP error carries the packet it is about: the first address and type are its own.
  const first = (v: string) => v.split('|')[0];
  return out.stdout.trimEnd().split('\n').filter((l) => l !== '').map((line) => {
    const [comments, xdp, direction, src, dst, icmpType] = line.split('\t');
    return { comments: comments === '' ? [] : comments.split('|'), xdp, direction: direction.endsWith('1') ? 'in' : 'out', src: first(src), dst: first(dst), icmpType: first(icmpType) };
  });
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
  const api = adminClient(vr);
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
${steadyPing('10.0.2.2')}
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
${STEADY_PING_RESULT}
`,
    timeoutS: 150,
  });
  t.teardown(() => a.kill());
  await b.waitForConsole(/VR-STEP b-ready/, 90_000);
  await a.waitForConsole(/VR-STEP steady-started/, 90_000);

  // A bad request: refused (exit 1, the field named), nothing changes.
  const before = (await api.call('GET', '/config')).json;
  const bad = await ctl(vr, 'route', 'add', '198.51.100.0/24', 'via', '10.0.9.9');
  t.equal(bad.status, 1, 'a gateway in no subnet: refused');
  t.match(bad.out, /VR_CONFIG at via/);
  t.same((await api.call('GET', '/config')).json, before, 'and nothing changed');
  const denyIcmp = join(vr.dir, 'deny-icmp.json');
  const noRules = join(vr.dir, 'no-rules.json');
  writeFileSync(denyIcmp, JSON.stringify([{ action: 'deny', protocol: 'icmp', dst: '198.51.100.0/24' }]));
  writeFileSync(noRules, '[]');

  const timed = async (what: string, change: () => Promise<{ status: number; out: string }>, step: RegExp) => {
    const started = Date.now();
    const res = await change();
    const answered = Date.now();
    t.equal(res.status, 0, `${what}: done (${res.out.trim().split('\n')[0]})`);
    await a.waitForConsole(step, 10_000);
    const seen = Date.now();
    // The guest probes every 50 ms and calls a probe unanswered after 300 ms; vrouterctl
    // itself takes a few hundred ms to start (Node, its HTTP client): 1 s is the bound for
    // all of it, and the change is in force once vrouterctl has answered.
    t.ok(seen - started < 1000, `${what}: seen by the guest ${seen - started} ms after the request (vrouterctl answered after ${answered - started})`);
    t.ok(seen - answered < 600, `${what}: seen by the guest ${seen - answered} ms after vrouterctl answered`);
  };
  // Port a captured while the route and the rules change, until Ctrl-C.
  const pcap = join(vr.dir, 'a.pcapng');
  const capture = await startCapture(vr, 'a', '-w', pcap, '--filter', 'icmp', '--count', '100000', '--seconds', '300');
  t.teardown(() => capture.kill());
  const changesStarted = Date.now();
  await timed('vrouterctl route add', () => ctl(vr, 'route', 'add', '198.51.100.0/24', 'via', '10.0.2.2'), /VR-STEP reached/);
  await timed('vrouterctl acl set (deny ICMP to it)', () => ctl(vr, 'acl', 'set', denyIcmp), /VR-STEP blocked/);
  await timed('vrouterctl acl set (no rules)', () => ctl(vr, 'acl', 'set', noRules), /VR-STEP reached-again/);
  t.equal(await capture.stop(), 0, 'Ctrl-C ended the capture', { stderr: capture.stderr() });
  t.match(capture.stderr(), /\d+ packets written to \S+a\.pcapng; stopped by SIGINT/);
  await timed('vrouterctl route del', () => ctl(vr, 'route', 'del', '198.51.100.0/24'), /VR-STEP unrouted/);
  const changesSeconds = (Date.now() - changesStarted) / 1000;

  const [ra] = await Promise.all([a.done]);
  const steady = ra.results.find((r) => r.test === 'steady');
  // It ran from before the first change until the last was seen, at 5 requests a second
  // (fewer while the guest forks its pings slowly under emulation): at 2.5 a second at
  // least, over its own seconds and over the changes' (less one: the guest counts whole
  // seconds).
  t.ok(Number(steady?.sent) >= 2.5 * Math.max(Number(steady?.secs), changesSeconds - 1), `the steady flow ran all along: ${steady?.sent} pings in ${steady?.secs} s, the changes took ${changesSeconds.toFixed(1)} s`);
  t.equal(steady?.recv, steady?.sent, `and lost nothing: ${steady?.recv} of ${steady?.sent}`, { console: ra.console.slice(-2000) });
  const stats = (await api.call('GET', '/counters')).json;
  t.ok(stats.a.plugins.routing.drops.no_route > 0, 'the unrouted pings were counted as no_route');
  t.ok(stats.a.plugins.acl.drops.acl_deny > 0, 'the denied ones as acl_deny');

  // What tshark reads in the capture (a second or so of it, the steady flow pinging every
  // 200 ms): each echo request a sent with what routing and the ACL did to it and the
  // verdict (XDP_REDIRECT 4: to another port; XDP_DROP 1), and each reply written to a.
  const packets = tshark(pcap);
  const traces = (list: Captured[]) => [...new Set(list.map((p) => `${p.comments.join(' | ')} [xdp ${p.xdp || '-'}]`))];
  const seen = { traces: traces(packets) };
  const requests = (dst: string) => packets.filter((p) => p.direction === 'in' && p.icmpType === '8' && p.src === '10.0.1.2' && p.dst === dst);
  const replies = (src: string) => packets.filter((p) => p.direction === 'out' && p.icmpType === '0' && p.src === src && p.dst === '10.0.1.2');
  const steadyRequests = requests('10.0.2.2');
  t.ok(steadyRequests.length >= 2, `the steady flow's echo requests, in on a: ${steadyRequests.length}`, seen);
  t.same(traces(steadyRequests), ['routing: via 10.0.2.2 port b (connected) | acl: no change | verdict: to port b [xdp 4]'], 'each routed to b, the ACL letting it pass');
  const steadyReplies = replies('10.0.2.2');
  t.ok(steadyReplies.length >= 2, `and their echo replies, out on a: ${steadyReplies.length}`, seen);
  t.same(traces(steadyReplies), ['written to port a (pmd0) [xdp -]'], 'each written to a');
  const probes = requests('198.51.100.1');
  const routedTrace = 'routing: via 10.0.2.2 port b | acl: no change | verdict: to port b [xdp 4]';
  const deniedTrace = 'routing: via 10.0.2.2 port b | acl: dropped: acl_deny | verdict: dropped: acl_deny [xdp 1]';
  const unroutedTrace = 'routing: dropped: no_route | verdict: dropped: no_route [xdp 1]';
  const routed = probes.filter((p) => p.xdp === '4');
  const denied = probes.filter((p) => p.comments.includes('acl: dropped: acl_deny'));
  t.ok(routed.length >= 2, `echo requests to 198.51.100.1 routed by the new route: ${routed.length}`, seen);
  t.same(traces(routed), [routedTrace], 'via its gateway, the ACL letting them pass');
  t.ok(denied.length >= 1, `echo requests to 198.51.100.1 denied while the rule was in force: ${denied.length}`, seen);
  t.same(traces(denied), [deniedTrace], 'routed, then dropped by the ACL');
  t.same(traces(probes).filter((trace) => ![routedTrace, deniedTrace, unroutedTrace].includes(trace)), [], 'the others sent before the route, dropped by routing', seen);
  const probeReplies = replies('198.51.100.1');
  t.ok(probeReplies.length >= 1 && probeReplies.length <= routed.length, `replies from 198.51.100.1 (${probeReplies.length}), for the routed requests only (${routed.length})`, seen);

  const [pmd] = (await api.call('GET', '/pmds')).json;
  t.ok(pmd.busy_ms > 0 && pmd.busy_rounds > 0 && pmd.ns_per_packet > 0, `the PMD's load: ${pmd.busy_ms} ms busy in ${pmd.busy_rounds} rounds, ${pmd.ns_per_packet} ns per packet`);
});
