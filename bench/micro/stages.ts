// Each stage of the pipeline alone, on a burst of 32 64-byte UDP frames on one thread:
// ns per packet, so that the next optimisation has a target. The frames are those the
// routed benchmark sends (one flow per frame, to a next hop known in advance).
import './dataplane-jit.ts';
import bridge from '../../plugins/bridge/index.ts';
import routing from '../../plugins/routing/index.ts';
import { PluginHarness } from '../../src/pipeline/testing.ts';
import { udp4 } from '../../test/support/frames.ts';
import type { Plugin } from '../../src/pipeline/api.ts';

const ROUTER = '00:01:02:03:04:01';
const ports = [
  { name: 'a', bridge: null, settings: { addresses: ['10.0.1.1/24'], routerMac: ROUTER, mtu: 1500, macLimit: 256 } },
  { name: 'b', bridge: null, settings: { addresses: ['10.0.2.1/24'], routerMac: ROUTER, mtu: 1500, macLimit: 256 } },
];
const routedConfig = {
  routes: [{ prefix: '10.253.0.0/16', via: '10.0.2.2' }],
  neighbours: [{ address: '10.0.2.2', mac: '02:00:00:00:00:0b', port: 'b' }],
};
const frames = Array.from({ length: 32 }, (_, k) => udp4({ src: '10.254.0.1', dst: `10.253.0.${k}`, srcPort: 1000, dstPort: 1001, payload: 18, srcMac: '02:00:00:00:00:0a', dstMac: ROUTER }));

export interface StageFigure {
  name: string;
  nsPerPacket: number;
}

/** A stage's ns per packet; optional stages (plugins not installed) are left out. */
async function stage(name: string, plugin: Plugin<unknown, unknown>, options: ConstructorParameters<typeof PluginHarness>[1]): Promise<StageFigure> {
  const h = await PluginHarness.create(plugin, options);
  h.measure('a', frames, 2000, 1); // warm-up: the JIT settles
  return { name, nsPerPacket: h.measure('a', frames) };
}

export async function stageFigures(): Promise<StageFigure[]> {
  const out = [
    await stage('bridge', bridge as Plugin<unknown, unknown>, { ports: ports.map((p) => ({ ...p, bridge: 'br0' })) }),
    await stage('routing', routing as Plugin<unknown, unknown>, { ports, config: routedConfig }),
  ];
  for (const [name, config] of [
    ['acl', { acl: [...Array.from({ length: 100 }, (_, i) => ({ action: 'deny', protocol: 'tcp', src: `192.0.2.${i}/32`, dstPort: 1000 + i })), { action: 'permit', stateful: true }], aclDefault: 'deny', policerNames: [] }],
    ['ratelimit', { policers: [{ name: 'uplink', type: 'srTCM', cir: '100gbit', cbs: '10mb', ebs: '10mb', apply: [{ inPort: 'a' }] }] }],
  ] as const) {
    try {
      const plugin = (await import(`../../plugins/${name}/index.ts`)).default as Plugin<unknown, unknown>;
      out.push(await stage(name === 'acl' ? 'acl (100 rules, stateful)' : 'ratelimit (srTCM, passing)', plugin, { ports, config: config as Record<string, unknown> }));
    } catch (err) {
      out.push({ name: `${name}: not measured (${(err as Error).message.split('\n')[0]})`, nsPerPacket: NaN });
    }
  }
  return out;
}

if (import.meta.main) for (const f of await stageFigures()) console.log(`${f.name}: ${f.nsPerPacket.toFixed(1)} ns/packet`);
