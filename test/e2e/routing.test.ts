// Linux guests under QEMU on three subnets, routed by vrouter: what a user of the router
// sees from inside the VMs. IPv4 and IPv6 across subnets (the IPv6 default route learned
// from the router's advertisements), the router's own addresses, traceroute, path MTU
// between a 9000 and a 1500 port, IPv4 fragmentation, iperf3; ACLs (a denied port, stateful
// return traffic); a prefix removed and the router's MAC changed at run time; and, as
// vrouter stops, the guest's IPv6 default route gone with its last advertisement. The VLAN
// trunk and the policer, whose checks are of TCP's rate, are in routing-rates.test.ts.
import t from 'tap';
import { guestPrerequisites, type GuestResult, type GuestSpec } from './lib/guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { adminClient } from '../support/admin-client.ts';
import { script, runGuests, runTwoSubnetGuests, routedGuest, find, excerpt, pluginTotals, vrouterLog, pingOk, twoSubnets } from './lib/routed.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

t.test('three subnets: ping, traceroute, path MTU and iperf3 across the router', async (t) => {
  const vr = await startVrouter({
    ports: [
      // a's reverse-path filter: strict (its guest forges a source once, below).
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], mtu: 1500, rpf: 'strict' },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24', '2001:db8:2::1/64'], mtu: 9000 },
      { name: 'c', socket: '{dir}/c.sock', bridge: 'br0' },
      { name: 'd', socket: '{dir}/d.sock', bridge: 'br0' },
    ],
    bridges: { br0: { addresses: ['10.0.3.1/24'] } },
    pipeline: ['routing'],
    // 192.0.2.1 lives on b's loopback: reached only through this route.
    routes: [{ prefix: '192.0.2.0/24', via: '10.0.2.2' }],
  });
  t.teardown(() => vr.stop());
  const timeoutS = 170;
  const specs: GuestSpec[] = [
    {
      name: 'a',
      nics: [{ socket: vr.sockets.a, ip: '10.0.1.2/24' }],
      timeoutS,
      script: script(`
ip route add default via 10.0.1.1
vr_addr6 2001:db8:1::2/64
vr_wait_ra 20
vr_ping 10.0.1.1 3
vr_ping 2001:db8:1::1 3
vr_ping 10.0.2.1 3
vr_wait_peer 10.0.2.2 60
vr_ping 10.0.2.2 5
vr_wait_peer 2001:db8:2::2 30
vr_ping 2001:db8:2::2 5
vr_ping 192.0.2.1 3
vr_wait_peer 10.0.3.2 60
vr_ping 10.0.3.2 5
vr_wait_peer 10.0.3.3 30
vr_ping 10.0.3.3 5
vr_trace 10.0.2.2
vr_trace 2001:db8:2::2
vr_trace 198.51.100.1
# A source of b's subnet, forged on a: stopped by a's reverse-path filter.
ip addr add 10.0.2.99/32 dev eth0
ping -c 3 -W 1 -I 10.0.2.99 10.0.3.2 > /dev/null 2>&1
vr_result test=forged rc=$?
ip addr del 10.0.2.99/32 dev eth0
vr_iperf_client 10.0.2.2 2
vr_iperf_client 10.0.2.2 2 -R
`),
    },
    {
      name: 'b',
      nics: [{ socket: vr.sockets.b, ip: '10.0.2.2/24', mtu: 9000 }],
      timeoutS,
      script: script(`
ip route add default via 10.0.2.1
ip addr add 192.0.2.1/32 dev lo
vr_addr6 2001:db8:2::2/64
(vr_iperf_server; vr_iperf_server) &
vr_wait_ra 20
vr_ping 10.0.2.1 3
vr_ping 2001:db8:2::1 3
vr_wait_peer 10.0.1.2 60
# Without DF (busybox ping sets it whenever the packet fits the route's MTU, unless
# ip_no_pmtu_disc): 3028-byte packets leave b whole and the router fragments them for a.
echo 1 > /proc/sys/net/ipv4/ip_no_pmtu_disc
vr_ping 10.0.1.2 3 3000 0.5
echo 0 > /proc/sys/net/ipv4/ip_no_pmtu_disc
# With DF: the first 8028-byte packet gets "fragmentation needed, mtu 1500" from the router;
# b's kernel then fragments the next ones itself (busybox ping has no -M do to show the error).
u=$(vr_snmp Icmp InDestUnreachs)
vr_ping 10.0.1.2 4 8000 0.5
vr_result test=pmtu4 dest_unreachs=$(( $(vr_snmp Icmp InDestUnreachs) - u )) route=$(ip route get 10.0.1.2 | tr ' \\n' '__')
vr_wait_peer 2001:db8:1::2 30
p=$(vr_snmp6 Icmp6InPktTooBigs); f=$(vr_snmp6 Ip6FragCreates)
vr_ping 2001:db8:1::2 4 8000 0.5
vr_result test=pmtu6 too_bigs=$(( $(vr_snmp6 Icmp6InPktTooBigs) - p )) frags=$(( $(vr_snmp6 Ip6FragCreates) - f )) route=$(ip -6 route get 2001:db8:1::2 | tr ' \\n' '__')
`),
    },
    {
      name: 'c',
      nics: [{ socket: vr.sockets.c, ip: '10.0.3.2/24' }],
      timeoutS,
      script: script(`
ip route add default via 10.0.3.1
vr_ping 10.0.3.1 3
vr_wait_peer 10.0.3.3 60
vr_ping 10.0.3.3 3
vr_wait_peer 10.0.1.2 60
vr_ping 10.0.1.2 5
vr_wait_peer 10.0.2.2 60
vr_ping 10.0.2.2 5
vr_trace 10.0.1.2
`),
    },
    {
      name: 'd',
      nics: [{ socket: vr.sockets.d, ip: '10.0.3.3/24' }],
      timeoutS,
      script: script(`
ip route add default via 10.0.3.1
vr_ping 10.0.3.1 3
vr_wait_peer 10.0.1.2 60
vr_ping 10.0.1.2 5
vr_wait_peer 10.0.2.2 60
vr_ping 10.0.2.2 5
`),
    },
  ];
  const { results, stats, unfinished } = await runGuests(t, vr, specs);
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((n) => results[n]);
  t.same(unfinished, [], 'every guest ran its script to the end', { vrouter: vrouterLog(vr) });

  for (const [vm, r] of [['a', a], ['b', b]] as const) {
    const ra = find(r, 'ra_route');
    t.equal(ra?.ok, '1', `${vm}: an IPv6 default route learned from the router's advertisement (${ra?.route}, after ${ra?.waited_ms} ms)`, { console: excerpt(r) });
    t.match(ra?.route ?? '', /^default_via_fe80:/, `${vm}: via the router's link-local address`);
    t.same([ra?.accept_ra, ra?.forwarding], ['1', '0'], `${vm}: the guest kernel takes RAs (accept_ra=1, forwarding=0)`);
  }

  // The router's own addresses, on the guest's port and on another.
  pingOk(t, a, 'a', '10.0.1.1');
  pingOk(t, a, 'a', '2001:db8:1::1');
  pingOk(t, a, 'a', '10.0.2.1');
  pingOk(t, b, 'b', '10.0.2.1');
  pingOk(t, b, 'b', '2001:db8:2::1');
  pingOk(t, c, 'c', '10.0.3.1');
  pingOk(t, d, 'd', '10.0.3.1');
  // Across subnets, both families; and through the static route.
  pingOk(t, a, 'a', '10.0.2.2');
  pingOk(t, a, 'a', '2001:db8:2::2');
  pingOk(t, a, 'a', '192.0.2.1');
  pingOk(t, a, 'a', '10.0.3.2');
  pingOk(t, a, 'a', '10.0.3.3');
  pingOk(t, c, 'c', '10.0.3.3');
  pingOk(t, c, 'c', '10.0.1.2');
  pingOk(t, c, 'c', '10.0.2.2');
  pingOk(t, d, 'd', '10.0.1.2');
  pingOk(t, d, 'd', '10.0.2.2');

  // traceroute: the router is the first hop (ICMP time exceeded from its address on the
  // sender's side), and says "network unreachable" (!N) where it has no route.
  const trace = (r: GuestResult | undefined, dst: string) => find(r, 'trace', { dst });
  t.match(trace(a, '10.0.2.2'), { hop1: '10.0.1.1', hop2: '10.0.2.2' }, 'a: traceroute 10.0.2.2 shows the router, then b', { console: excerpt(a) });
  t.match(trace(a, '2001:db8:2::2'), { hop1: '2001:db8:1::1', hop2: '2001:db8:2::2' }, 'a: traceroute6 2001:db8:2::2 shows the router, then b', { console: excerpt(a) });
  // With TTL 1 the router may answer "time exceeded" before it looks the route up (RFC 1812
  // 5.3.1 leaves the order open); the first probe that outlives the TTL check gets !N.
  const unreachable = trace(a, '198.51.100.1');
  const unreachableHops = Object.entries(unreachable ?? {}).filter(([k]) => k.startsWith('hop')).map(([, v]) => v);
  t.equal(unreachableHops.at(-1), '10.0.1.1!N', `a: traceroute to an address with no route ends at the router with "network unreachable" (${unreachableHops.join(' ')})`, { console: excerpt(a) });
  t.match(trace(c, '10.0.1.2'), { hop1: '10.0.3.1', hop2: '10.0.1.2' }, 'c (in the bridge): traceroute 10.0.1.2 shows the router, then a', { console: excerpt(c) });

  // Path MTU: b's port takes 9000 bytes, a's 1500.
  const noDf = find(b, 'ping', { dst: '10.0.1.2', size: '3000' });
  t.equal(noDf?.loss_pct, '0', `b: 3028-byte pings without DF reach a (${noDf?.recv}/${noDf?.sent}): the router fragments them`, { console: excerpt(b) });
  t.equal(noDf?.frags, '0', 'b: sent them whole (the fragments were made by the router)');
  const df = find(b, 'ping', { dst: '10.0.1.2', size: '8000' });
  const pmtu4 = find(b, 'pmtu4');
  t.ok(Number(pmtu4?.dest_unreachs) >= 1, `b: "fragmentation needed" came back for an 8028-byte packet with DF (${pmtu4?.dest_unreachs} ICMP unreachable; ${pmtu4?.route})`);
  t.ok(Number(df?.frags) > 0, `b: then fragmented the next pings itself: it learned the path MTU (${df?.frags} fragments)`);
  t.ok(Number(df?.recv) >= 2, `b: and those got through (${df?.recv}/${df?.sent}; the first is lost by design)`);
  const pmtu6 = find(b, 'pmtu6');
  const df6 = find(b, 'ping', { dst: '2001:db8:1::2', size: '8000' });
  t.ok(Number(pmtu6?.too_bigs) >= 1, `b: "packet too big" came back for an 8048-byte IPv6 packet (${pmtu6?.too_bigs}; ${pmtu6?.route})`);
  t.ok(Number(pmtu6?.frags) > 0, `b: then fragmented at the source, as IPv6 does (${pmtu6?.frags} fragments)`);
  t.ok(Number(df6?.recv) >= 2, `b: and those got through (${df6?.recv}/${df6?.sent})`);

  const up = find(a, 'iperf3', { args: '' });
  const down = find(a, 'iperf3', { args: '-R' });
  t.ok(Number(up?.receiver_mbps) > 10, `iperf3 a -> b through the router: ${up?.receiver_mbps} Mbit/s`, { console: excerpt(a) });
  t.ok(Number(down?.receiver_mbps) > 10, `iperf3 b -> a through the router: ${down?.receiver_mbps} Mbit/s`);

  const routing = pluginTotals(stats, 'routing');
  t.ok(routing.counters !== undefined && Object.keys(routing.counters).length > 0, 'vrouter reports the routing stage\'s counters', { stats });
  const counters = routing.counters;
  const dr = routing.drops;
  t.ok(counters.routed > 1000, `routed: ${counters.routed}`, { counters });
  t.ok(counters.arp_replies_sent >= 4, `ARP requests for the router's addresses answered: ${counters.arp_replies_sent}`);
  t.ok(counters.neighbour_advertisements_sent >= 1, `neighbour solicitations answered: ${counters.neighbour_advertisements_sent}`);
  t.ok(counters.router_advertisements_sent >= 2, `router advertisements sent: ${counters.router_advertisements_sent}`);
  t.ok(counters.echo_replies_sent >= 21, `echo requests to the router answered: ${counters.echo_replies_sent} (21 sent)`);
  t.ok(counters.icmp_errors_sent >= 5, `ICMP errors sent (time exceeded, unreachable, fragmentation needed, packet too big): ${counters.icmp_errors_sent}`);
  t.ok(counters.fragments_created >= 6, `IPv4 fragments made for the 1500 port: ${counters.fragments_created}`);
  t.ok(dr.ttl_exceeded >= 3, `drops for TTL exceeded (traceroute): ${dr.ttl_exceeded}`, { drops: dr });
  t.ok(dr.no_route >= 1, `drops for no route: ${dr.no_route}`);
  t.ok(dr.mtu_exceeded >= 2, `drops for DF/IPv6 over the egress MTU: ${dr.mtu_exceeded}`);
  // a's guest sent 3 pings from b's subnet: a's strict filter drops them where they come in;
  // its own traffic (pings, traceroutes, iperf3 above) passes it.
  t.equal(find(a, 'forged')?.rc, '1', 'a: pings from a forged source get no answer', { console: excerpt(a) });
  t.equal(stats.a.plugins.routing?.drops.reverse_path, 3, `a: the forged pings dropped by the reverse-path filter (${JSON.stringify(stats.a.plugins.routing?.drops)})`);
  for (const reason of ['ip_header_bad', 'ip_length_bad', 'ip_checksum_bad', 'arp_bad', 'ndp_bad', 'fragmentation_failed', 'neighbour_table_full']) {
    t.equal(dr[reason] ?? 0, 0, `no ${reason} drops`);
  }
  for (const [port, s] of Object.entries(stats)) t.equal(s.queue_errors, 0, `${port}: no queue errors`);
});

/** Two guests on two routed ports, a (10.0.1.0/24) and b (10.0.2.0/24). */
t.test("ACL: a denied TCP port, and a stateful rule that lets only a open connections, fragmented replies too", async (t) => {
  const vr = await startVrouter(
    twoSubnets({
      pipeline: ['routing', 'acl'],
      acl: [
        { action: 'deny', protocol: 'tcp', dstPort: 5202, outPort: 'b' },
        { action: 'permit', stateful: true, inPort: 'a' },
        { action: 'deny', inPort: 'b' },
      ],
      aclDefault: 'permit',
    }),
  );
  t.teardown(() => vr.stop());
  const { results, stats, unfinished } = await runTwoSubnetGuests(
    t,
    vr,
    `
iperf3 -s -p 5201 > /dev/null 2>&1 &
vr_wait_peer 10.0.2.2 60
vr_iperf_client 10.0.2.2 2 -p 5201
vr_ping 10.0.2.2 3
vr_ping 10.0.2.2 3 3000
vr_connect 10.0.2.2 5202
`,
    `
iperf3 -s -p 5202 > /dev/null 2>&1 &
timeout 90 iperf3 -s -1 -p 5201 > /dev/null 2>&1; vr_result test=iperf3_server port=5201 rc=$?
vr_connect 10.0.1.2 5201
vr_ping 10.0.1.2 3
`,
  );
  const { a, b } = results;
  t.same(unfinished, [], 'both guests ran their scripts to the end', { vrouter: vrouterLog(vr) });
  const allowed = find(a, 'iperf3', { args: '-p_5201' });
  t.ok(Number(allowed?.receiver_mbps) > 1, `a -> b TCP 5201 permitted, replies come back: ${allowed?.receiver_mbps} Mbit/s`, { console: excerpt(a) });
  pingOk(t, a, 'a', '10.0.2.2');
  // Each echo and reply of 3,028 bytes goes as three fragments; the replies' later ones
  // carry no ICMP header, and judged alone would meet "deny inPort b".
  const large = find(a, 'ping', { dst: '10.0.2.2', size: '3000' });
  t.equal(large?.loss_pct, '0', `a -> b ping of 3,000 bytes, fragmented, answered (${large?.recv}/${large?.sent})`, { console: excerpt(a) });
  t.ok(Number(large?.frags) >= 3, `the echo requests went as fragments (${large?.frags} made)`);
  const denied = find(a, 'connect', { port: '5202' });
  t.equal(denied?.ok, '0', 'a -> b TCP 5202: denied', { console: excerpt(a) });
  t.equal(denied?.refused, '0', 'the SYN was dropped (a timeout), not refused by b, whose server listens on 5202');
  const fromB = find(b, 'connect', { port: '5201' });
  t.equal(fromB?.ok, '0', 'b -> a TCP 5201, a new connection from b: denied', { console: excerpt(b) });
  t.equal(fromB?.refused, '0', 'dropped, not refused (a listens on 5201)');
  const ping = find(b, 'ping', { dst: '10.0.1.2' });
  t.equal(ping?.recv, '0', `b -> a ping, new from b: denied (${ping?.recv}/${ping?.sent})`);
  const acl = pluginTotals(stats, 'acl');
  const dropped = Object.values(acl.drops).reduce((x, y) => x + y, 0);
  t.ok(dropped >= 3, `the acl stage counted its drops: ${JSON.stringify(acl.drops)}`, { counters: acl.counters });
  t.ok((acl.counters.acl_fragments_followed ?? 0) >= 12, `the later fragments of the 3 echoes and 3 replies followed their first: ${acl.counters.acl_fragments_followed}`);
});

t.test("a prefix removed at run time is deprecated in the guest; stopped, vrouter tells the guest it is no default router any more: its IPv6 default route goes at once", async (t) => {
  const { vr, guest } = await routedGuest(
    t,
    { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24', '2001:db8:1::1/64', '2001:db8:9::1/64'] },
    `# vr_deprecated HEX: whether the guest's address that starts so (/proc/net/if_inet6) is deprecated (IFA_F_DEPRECATED, 0x20): 1 or 0, none without one
vr_deprecated() {
  f=$(awk -v p="$1" 'index($1, p) == 1 { print $5 }' /proc/net/if_inet6 | head -n1)
  if [ -n "$f" ]; then echo $(( (0x$f & 0x20) >> 5 )); else echo none; fi
}
vr_wait_ra 30
n=0
while [ "$(vr_deprecated 20010db80009)" = none ] && [ $n -lt 50 ]; do sleep 0.2; n=$((n + 1)); done
echo VR-STEP ra-learned
# until the address in the prefix removed is deprecated, 30 s at most
n=0
while [ "$(vr_deprecated 20010db80009)" != 1 ] && [ $n -lt 150 ]; do sleep 0.2; n=$((n + 1)); done
vr_result test=withdrawn deprecated=$(vr_deprecated 20010db80009) kept_deprecated=$(vr_deprecated 20010db80001) onlink=$(ip -6 route | grep -c '^2001:db8:9::/64') default=$(ip -6 route | grep -c '^default') waited_ms=$((n * 200))
echo VR-STEP withdrawn
# until the default route goes (the advertisement gave it 1800 s), 30 s at most
n=0
while ip -6 route | grep -q '^default' && [ $n -lt 150 ]; do sleep 0.2; n=$((n + 1)); done
vr_result test=farewell gone=$(ip -6 route | grep -q '^default' && echo 0 || echo 1) waited_ms=$((n * 200))
`,
  );
  await guest.waitForConsole(/VR-STEP ra-learned/, 90_000);
  const api = adminClient(vr);
  const config = (await api.call('GET', '/config')).json;
  const removed = await api.call('PUT', '/config', { ...config, ports: [{ ...config.ports[0], addresses: ['10.0.1.1/24', '2001:db8:1::1/64'] }] });
  t.match(removed, { status: 200, json: { mode: 'restart' } }, '2001:db8:9::1/64 removed from port a');
  await guest.waitForConsole(/VR-STEP withdrawn/, 60_000);
  t.equal(await vr.stop(), 0, 'vrouter stopped cleanly (SIGTERM)');
  const r = await guest.done;
  t.equal(find(r, 'ra_route')?.ok, '1', `the guest had a default route from the router's advertisement (${find(r, 'ra_route')?.route})`, { console: excerpt(r) });
  const withdrawn = find(r, 'withdrawn');
  t.same(
    [withdrawn?.deprecated, withdrawn?.onlink, withdrawn?.kept_deprecated, withdrawn?.default],
    ['1', '0', '0', '1'],
    `the guest's address in the prefix removed deprecated and its on-link route gone (after ${withdrawn?.waited_ms} ms); its other address and its default route as they were`,
    { console: excerpt(r) },
  );
  const gone = find(r, 'farewell');
  t.equal(gone?.gone, '1', `and it went once vrouter stopped (after ${gone?.waited_ms} ms), not when its 1800 s ran out`, { console: excerpt(r) });
});

t.test("the router's MAC changed at run time: the guest's ARP and neighbour entries take the new one at once (its announcements)", async (t) => {
  const { vr, guest } = await routedGuest(
    t,
    { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24', '2001:db8:1::1/64'], routerMac: '02:00:00:00:aa:01' },
    `vr_addr6 2001:db8:1::2/64
vr_wait_peer 10.0.1.1 10
ping -c 1 -W 2 2001:db8:1::1 > /dev/null 2>&1
# Linux takes no new MAC for an entry it updated in the last second (locktime)
sleep 1.5
vr_result test=learned arp=$(ip neigh show 10.0.1.1 | awk '{ print $5 }') nd=$(ip -6 neigh show 2001:db8:1::1 | awk '{ print $5 }')
echo VR-STEP learned
# until both entries have the new MAC, 10 s at most, without a packet sent to the router meanwhile
n=0
while [ $n -lt 50 ]; do
  ip neigh show 10.0.1.1 | grep -q 02:00:00:00:aa:02 && ip -6 neigh show 2001:db8:1::1 | grep -q 02:00:00:00:aa:02 && break
  sleep 0.2; n=$((n + 1))
done
vr_result test=announced arp=$(ip neigh show 10.0.1.1 | awk '{ print $5 }') nd=$(ip -6 neigh show 2001:db8:1::1 | awk '{ print $5 }') waited_ms=$((n * 200))
vr_ping 10.0.1.1 3
`,
  );
  await guest.waitForConsole(/VR-STEP learned/, 90_000);
  const api = adminClient(vr);
  const config = (await api.call('GET', '/config')).json;
  t.match(await api.call('PUT', '/config', { ...config, ports: [{ ...config.ports[0], routerMac: '02:00:00:00:aa:02' }] }), { status: 200, json: { mode: 'restart' } }, "port a's router MAC changed");
  const r = await guest.done;
  t.same([find(r, 'learned')?.arp, find(r, 'learned')?.nd], ['02:00:00:00:aa:01', '02:00:00:00:aa:01'], 'the guest knew the router by its first MAC', { console: excerpt(r) });
  const announced = find(r, 'announced');
  t.same([announced?.arp, announced?.nd], ['02:00:00:00:aa:02', '02:00:00:00:aa:02'], `then by the new one, IPv4 and IPv6, after ${announced?.waited_ms} ms`, { console: excerpt(r) });
  t.equal(find(r, 'ping')?.loss_pct, '0', 'and reaches it', { console: excerpt(r) });
});
