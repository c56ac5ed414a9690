// The jobs a backend is measured doing, each as vrouter config and as OpenFlow for OVS-DPDK:
// - bridged: MAC learning between the two ports (OVS: the NORMAL action);
// - routed: a route lookup, TTL decremented with its checksum, both MACs rewritten (OVS:
//   dec_ttl and mod_dl_src/dst on an IP match);
// - full: routed, then 100 ACL rules that do not match and a stateful permit (OVS: 100
//   flows at a higher priority, conntrack), then a policer far above the rate (OVS: a meter).
// The generator (testpmd flowgen, UDP, 1024 flows) sends from both ports to the same MAC,
// 00:01:02:03:04:01, and the same destination addresses, 10.253.0.0 to 10.253.3.255: the
// router has that MAC on both ports, and routes the lower half of the addresses to a next
// hop behind port a, the upper half behind port b, so that each port sends what it receives.
import { MAC_A, MAC_B } from './generator.ts';

export type JobName = 'bridged' | 'routed' | 'full';
export const JOBS: JobName[] = ['bridged', 'routed', 'full'];

/** The router's MAC on both ports: where flowgen sends (it ignores --eth-peer). */
export const FLOWGEN_DST = '00:01:02:03:04:01';
const ROUTER_A = FLOWGEN_DST;
const ROUTER_B = FLOWGEN_DST;
/** The next hops: the generator's ports. */
const NEXT_HOP_A = MAC_A;
const NEXT_HOP_B = MAC_B;

const aclRules = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ action: 'deny', protocol: 'tcp', src: `192.0.2.${i}/32`, dstPort: 1000 + i }));

/** The routed jobs' routes and next hops, between ports a and b (with the router's MAC FLOWGEN_DST on both). */
export const ROUTED_TABLES = {
  routes: [
    { prefix: '10.253.0.0/23', via: '10.0.1.2' },
    { prefix: '10.253.2.0/23', via: '10.0.2.2' },
  ],
  neighbours: [
    { address: '10.0.1.2', mac: NEXT_HOP_A, port: 'a' },
    { address: '10.0.2.2', mac: NEXT_HOP_B, port: 'b' },
  ],
};

/** vrouter's config for a job between sockets a and b; `mtu` for frames longer than 1518 bytes (else the default, 1500). */
export function vrouterJob(job: JobName, sockets: [string, string], cores: number[], mtu?: number): object {
  const pmd = { cores, sleepMaxUs: 0 };
  const port = (name: string, socket: string) => ({ name, socket, ...(mtu === undefined ? {} : { mtu }) });
  if (job === 'bridged') {
    return { ports: [{ ...port('a', sockets[0]), bridge: 'br0' }, { ...port('b', sockets[1]), bridge: 'br0' }], pmd };
  }
  const routed = {
    ports: [
      { ...port('a', sockets[0]), addresses: ['10.0.1.1/24'], routerMac: ROUTER_A },
      { ...port('b', sockets[1]), addresses: ['10.0.2.1/24'], routerMac: ROUTER_B },
    ],
    pmd,
    ...ROUTED_TABLES,
  };
  if (job === 'routed') return { ...routed, pipeline: ['routing'] };
  return {
    ...routed,
    pipeline: ['routing', 'acl', 'ratelimit'],
    acl: [...aclRules(100), { action: 'permit', stateful: true }],
    aclDefault: 'deny',
    policers: [{ name: 'uplink', type: 'srTCM', cir: '100gbit', cbs: '10mb', ebs: '10mb', actions: { green: 'pass', yellow: 'pass', red: 'drop' }, apply: [{ inPort: 'a' }, { inPort: 'b' }] }],
  };
}

/** OVS: the ovs-ofctl commands (after the bridge and ports vh0, vh1 exist) for a job. */
export function ovsJob(job: JobName): { flows: string[]; meters: string[] } {
  if (job === 'bridged') return { flows: [], meters: [] };
  // OpenFlow has no "output to where I came from" but in_port: one flow per ingress port and half.
  const routes = (table: string, meter: string) =>
    ['vh0', 'vh1'].flatMap((inPort) => [
      `${table}priority=10,in_port=${inPort},ip,nw_dst=10.253.0.0/23,actions=${meter}dec_ttl,mod_dl_src:${ROUTER_A},mod_dl_dst:${NEXT_HOP_A},${inPort === 'vh0' ? 'in_port' : 'output:vh0'}`,
      `${table}priority=10,in_port=${inPort},ip,nw_dst=10.253.2.0/23,actions=${meter}dec_ttl,mod_dl_src:${ROUTER_B},mod_dl_dst:${NEXT_HOP_B},${inPort === 'vh1' ? 'in_port' : 'output:vh1'}`,
    ]);
  if (job === 'routed') return { meters: [], flows: [...routes('', ''), 'priority=0,actions=drop'] };
  const acl = aclRules(100).map((r) => `table=1,priority=200,tcp,nw_src=${r.src},tp_dst=${r.dstPort},actions=drop`);
  return {
    meters: ['meter=1,kbps,band=type=drop,rate=100000000'],
    flows: [
      'table=0,priority=10,ip,actions=ct(table=1)',
      'table=0,priority=0,actions=drop',
      ...acl,
      'table=1,priority=100,ct_state=+trk+new,ip,actions=ct(commit),goto_table:2',
      'table=1,priority=100,ct_state=+trk+est,ip,actions=goto_table:2',
      'table=1,priority=0,actions=drop',
      ...routes('table=2,', 'meter:1,'),
    ],
  };
}
