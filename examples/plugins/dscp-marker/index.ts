// dscp-marker: sets the DSCP of the IPv4 and IPv6 packets that enter on chosen ports (the
// field routers use to pick a queue), fixing the IPv4 header checksum incrementally
// (RFC 1624). A vrouter plugin: it only rewrites bytes and counts; it decides nothing
// about where a packet goes, so it may sit anywhere in the pipeline.
import { PLUGIN_API_VERSION, PluginConfigError, type PacketBatch, type Plugin, type PluginContext } from '../../../src/pipeline/api.ts';

export interface DscpConfig {
  /** the code point written, 0-63 (46 = EF, expedited forwarding) */
  dscp: number;
  /** names of the ingress ports whose packets are marked; empty: every port */
  ports: string[];
}

interface DscpState {
  dscp: number;
  /** per port index: 1 if its packets are marked */
  marks: Uint8Array;
  marked: number;
  notIp: number;
  count: PluginContext<DscpConfig>['count'];
}

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const ETHERTYPE_VLAN = 0x8100;

function parseConfig(raw: Record<string, unknown>): DscpConfig {
  for (const key of Object.keys(raw)) if (key !== 'dscp' && key !== 'ports') throw new PluginConfigError(key, 'unknown key (known: dscp, ports)');
  const dscp = raw.dscp;
  if (typeof dscp !== 'number' || !Number.isInteger(dscp) || dscp < 0 || dscp > 63) {
    throw new PluginConfigError('dscp', `must be an integer from 0 to 63, got ${JSON.stringify(dscp)}`);
  }
  const ports = raw.ports ?? [];
  if (!Array.isArray(ports)) throw new PluginConfigError('ports', 'must be an array of port names');
  ports.forEach((p, i) => {
    if (typeof p !== 'string') throw new PluginConfigError(`ports[${i}]`, `must be a port name, got ${JSON.stringify(p)}`);
  });
  return { dscp, ports: ports as string[] };
}

/** IPv4: DSCP is the top 6 bits of byte 1; the header checksum changes by the 16-bit word's change (RFC 1624, eqn. 3). */
function markIpv4(data: Uint8Array, ip: number, dscp: number): void {
  const oldWord = (data[ip] << 8) | data[ip + 1];
  const tos = (dscp << 2) | (data[ip + 1] & 3);
  const newWord = (data[ip] << 8) | tos;
  data[ip + 1] = tos;
  // HC' = ~(~HC + ~m + m')
  let sum = (~((data[ip + 10] << 8) | data[ip + 11]) & 0xffff) + (~oldWord & 0xffff) + newWord;
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  const checksum = ~sum & 0xffff;
  data[ip + 10] = checksum >>> 8;
  data[ip + 11] = checksum & 0xff;
}

/** IPv6: the traffic class spans the low 4 bits of byte 0 and the high 4 of byte 1; DSCP is its top 6 bits. No checksum. */
function markIpv6(data: Uint8Array, ip: number, dscp: number): void {
  data[ip] = (data[ip] & 0xf0) | (dscp >>> 2);
  data[ip + 1] = (data[ip + 1] & 0x3f) | ((dscp & 3) << 6);
}

function process(batch: PacketBatch, s: DscpState): void {
  if (s.marks[batch.ingress] === 0) return;
  const data = batch.data;
  let marked = 0;
  let notIp = 0;
  for (let i = 0; i < batch.count; i++) {
    if (batch.dropped(i)) continue;
    const off = batch.offset(i);
    const len = batch.length(i);
    let l3 = off + 14;
    let type = (data[off + 12] << 8) | data[off + 13];
    if (type === ETHERTYPE_VLAN && len >= 18) {
      type = (data[off + 16] << 8) | data[off + 17];
      l3 += 4;
    }
    // The frame must hold the header it claims: a guest may send anything.
    if (type === ETHERTYPE_IPV4 && l3 + 20 <= off + len && data[l3] >>> 4 === 4) {
      markIpv4(data, l3, s.dscp);
      marked++;
    } else if (type === ETHERTYPE_IPV6 && l3 + 40 <= off + len && data[l3] >>> 4 === 6) {
      markIpv6(data, l3, s.dscp);
      marked++;
    } else {
      notIp++;
    }
  }
  s.count(batch.ingress, s.marked, marked);
  s.count(batch.ingress, s.notIp, notIp);
}

const plugin: Plugin<DscpConfig, DscpState> = {
  name: 'dscp-marker',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  parseConfig,
  // It reads and writes the IP header's first two and its checksum bytes, at most 30 bytes
  // in (behind a VLAN tag): frames it marks may still be copied once, guest to guest.
  headerBytes: 30,
  counters: [
    ['marked', 'IPv4 and IPv6 packets whose DSCP was set'],
    ['not_ip', 'packets left as they were: not IP, or too short for their IP header'],
  ],
  createState(ctx) {
    const marks = new Uint8Array(ctx.ports.length);
    for (const p of ctx.ports) if (ctx.config.ports.length === 0 || ctx.config.ports.includes(p.name)) marks[p.index] = 1;
    const unknown = ctx.config.ports.find((name) => !ctx.ports.some((p) => p.name === name));
    if (unknown !== undefined) ctx.log.warn(`port "${unknown}" does not exist: nothing is marked for it`);
    return { dscp: ctx.config.dscp, marks, marked: ctx.counterId('marked'), notIp: ctx.counterId('not_ip'), count: ctx.count };
  },
  process,
};

export default plugin;
