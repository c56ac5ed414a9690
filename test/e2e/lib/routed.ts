// The routed end-to-end tests' shared parts: the shell functions their guests run, booting
// guests until each says done, and reading what they and vrouter report.
import type { Test } from 'tap';
import { bootGuest, type GuestResult, type GuestSpec } from './guest.ts';
import { startVrouter, type StartedVrouter } from '../../support/vrouter-process.ts';
import type { PortStats } from '../../../src/dataplane/counters.ts';

/**
 * Shell functions for the routed guests, on top of the image's /vr/lib.sh. Every guest
 * script ends with "vr_result test=done" and then stays up, so that the others can still
 * reach it; the test stops them all once each has said done.
 */
const ROUTED_LIB = `
# vr_addr6 ADDR/P: a global IPv6 address on eth0, usable at once (no duplicate address detection)
vr_addr6() { echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad; ip -6 addr add $1 dev eth0; }
# vr_wait_ra [SECS]: until the kernel has a default route from a Router Advertisement. It takes
# them with accept_ra=1 and forwarding=0, the defaults, reported here.
vr_wait_ra() {
  n=0; r=
  while [ $n -lt $(( \${1:-15} * 5 )) ]; do
    r=$(ip -6 route | grep '^default' | head -n1)
    [ -n "$r" ] && break
    sleep 0.2; n=$((n + 1))
  done
  vr_result test=ra_route ok=$([ -n "$r" ] && echo 1 || echo 0) waited_ms=$((n * 200)) accept_ra=$(cat /proc/sys/net/ipv6/conf/eth0/accept_ra) forwarding=$(cat /proc/sys/net/ipv6/conf/eth0/forwarding) route=$(echo $r | tr ' ' '_')
  [ -n "$r" ]
}
# vr_snmp GROUP FIELD: a counter of /proc/net/snmp ("Icmp" "InDestUnreachs")
vr_snmp() { awk -v s="$1:" -v k="$2" '$1 == s { if (n++) print $c; else for (i = 2; i <= NF; i++) if ($i == k) c = i }' /proc/net/snmp; }
# vr_snmp6 FIELD: a counter of /proc/net/snmp6 ("Icmp6InPktTooBigs")
vr_snmp6() { awk -v k="$1" '$1 == k { print $2 }' /proc/net/snmp6; }
# vr_trace DST [traceroute args]: one probe per hop; hopN=ADDR, with the !N/!H/!F... flag appended
vr_trace() {
  dst=$1; shift
  case $dst in *:*) tr=traceroute6 ;; *) tr=traceroute ;; esac
  out=$($tr -n -q 1 -w 2 -m 4 "$@" $dst 2>&1)
  echo "$out" | sed 's/^/trace: /'
  vr_result test=trace dst=$dst $(echo "$out" | awk '$1 ~ /^[0-9]+$/ { f = ""; for (i = 3; i <= NF; i++) if ($i ~ /^!/) f = $i; printf "hop%s=%s%s ", $1, $2, f }')
}
# vr_connect IP PORT: one iperf3 connection attempt (3 s to connect); ok=1 if it got through
vr_connect() {
  s=$(date +%s)
  out=$(iperf3 -c $1 -p $2 -t 1 --connect-timeout 3000 2>&1); rc=$?
  echo "$out" | tail -n 2 | sed 's/^/connect: /'
  vr_result test=connect dst=$1 port=$2 ok=$([ $rc = 0 ] && echo 1 || echo 0) secs=$(( $(date +%s) - s )) refused=$(echo "$out" | grep -c 'refused')
}
`;

const DONE = 'vr_result test=done\nsleep 600\n';

export function script(body: string): string {
  return `${ROUTED_LIB}\n${body.trim()}\n${DONE}`;
}

export interface Run {
  results: Record<string, GuestResult>;
  stats: Record<string, PortStats>;
  /** guests that never said done */
  unfinished: string[];
}

/**
 * Boots the guests, waits until each has said done (or exited, or ran out of time), reads
 * vrouter's counters, then stops the guests (before vrouter: QEMU complains when its
 * backend goes first).
 */
export async function runGuests(t: Test, vr: StartedVrouter, specs: GuestSpec[]): Promise<Run> {
  const guests = specs.map((s) => bootGuest(s));
  t.teardown(() => guests.forEach((g) => g.kill()));
  const finished = await Promise.all(
    guests.map((g, i) => g.waitForConsole(new RegExp(`^VR-RESULT vm=${specs[i].name} test=done`, 'm'), (specs[i].timeoutS ?? 120) * 1000).then(() => true, () => false)),
  );
  const stats = await vr.stats();
  guests.forEach((g) => g.kill());
  const done = await Promise.all(guests.map((g) => g.done));
  return {
    results: Object.fromEntries(specs.map((s, i) => [s.name, done[i]])),
    stats,
    unfinished: specs.filter((_, i) => !finished[i]).map((s) => s.name),
  };
}

/**
 * Guests a (10.0.1.2) and b (10.0.2.2) on twoSubnets' ports, each with its default route
 * through the router, running `a` and `b` after the routed helpers: runGuests' result.
 */
export function runTwoSubnetGuests(t: Test, vr: StartedVrouter, a: string, b: string): Promise<Run> {
  const timeoutS = 120;
  return runGuests(t, vr, [
    { name: 'a', nics: [{ socket: vr.sockets.a, ip: '10.0.1.2/24' }], timeoutS, script: script(`ip route add default via 10.0.1.1\n${a.trim()}`) },
    { name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.2.2/24' }], timeoutS, script: script(`ip route add default via 10.0.2.1\n${b.trim()}`) },
  ]);
}

/**
 * vrouter routing for one port, `a` (`port`: its entry in the config), and a guest on it at
 * 10.0.1.2/24 that runs `body` after the routed helpers; both stopped at the test's end.
 */
export async function routedGuest(t: Test, port: object, body: string): Promise<{ vr: StartedVrouter; guest: ReturnType<typeof bootGuest> }> {
  const vr = await startVrouter({ ports: [port], pipeline: ['routing'] });
  t.teardown(() => vr.stop());
  const guest = bootGuest({ name: 'a', nics: [{ socket: vr.sockets.a, ip: '10.0.1.2/24' }], timeoutS: 90, script: `${ROUTED_LIB}\n${body}` });
  t.teardown(() => guest.kill());
  return { vr, guest };
}

export function find(r: GuestResult | undefined, test: string, extra: Record<string, string> = {}): Record<string, string> | undefined {
  return r?.results.find((x) => x.test === test && Object.entries(extra).every(([k, v]) => x[k] === v));
}

/** The lines of a guest's console worth reading when something failed. */
export function excerpt(r: GuestResult | undefined): string {
  if (!r) return '(no guest)';
  return r.console
    .split('\n')
    .filter((l) => /^(VR-|trace:|connect:|\[qemu\])/.test(l))
    .join('\n');
}

/** A plugin's drops and counters summed over the ports (each counts at the packet's ingress). */
export function pluginTotals(stats: Record<string, PortStats>, plugin: string): { drops: Record<string, number>; counters: Record<string, number> } {
  const drops: Record<string, number> = {};
  const counters: Record<string, number> = {};
  for (const port of Object.values(stats)) {
    const p = port.plugins[plugin];
    if (!p) continue;
    for (const [k, v] of Object.entries(p.drops)) drops[k] = (drops[k] ?? 0) + v;
    for (const [k, v] of Object.entries(p.counters)) counters[k] = (counters[k] ?? 0) + v;
  }
  return { drops, counters };
}

/** vrouter's last log lines (its counters left out), for the failure report. */
export function vrouterLog(vr: StartedVrouter): string {
  return vr
    .stderr()
    .split('\n')
    .filter((l) => !/vrouter: stats /.test(l))
    .slice(-40)
    .join('\n');
}

export function pingOk(t: Test, r: GuestResult | undefined, vm: string, dst: string): void {
  const p = find(r, 'ping', { dst });
  t.equal(p?.loss_pct, '0', `${vm}: ping ${dst} without loss (${p?.recv ?? '-'}/${p?.sent ?? '-'})`, { console: excerpt(r) });
}


/** Ports a (10.0.1.1/24) and b (10.0.2.1/24), with `extra` (pipeline, plugins' config) beside them. */
export function twoSubnets(extra: object): object {
  return {
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'] },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'] },
    ],
    ...extra,
  };
}
