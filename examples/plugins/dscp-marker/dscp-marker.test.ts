// dscp-marker on crafted batches, then in a running vrouter between two ports.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import plugin from './index.ts';
import { PluginHarness } from '../../../src/pipeline/testing.ts';
import { NET_HDR_LEN } from '../../../src/virtio/constants.ts';
import { startDevice } from '../../../test/support/vhost-frontend.ts';
import { postRxBuffer, sendFrame } from '../../../test/support/virtio-driver.ts';
import { waitFor } from '../../../test/support/traffic.ts';
import { startVrouter } from '../../../test/support/vrouter-process.ts';

const MAC_A = [0x52, 0x54, 0, 0, 0, 0x0a];
const MAC_B = [0x52, 0x54, 0, 0, 0, 0x0b];

/** The one's complement sum of an IPv4 header: 0xffff when its checksum is right. */
function headerSum(bytes: Uint8Array, at: number): number {
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += (bytes[at + i] << 8) | bytes[at + i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

function ipv4Frame(tos: number, vlan = false): Uint8Array {
  const l3 = vlan ? 18 : 14;
  const f = new Uint8Array(l3 + 20 + 26);
  f.set(MAC_B, 0);
  f.set(MAC_A, 6);
  if (vlan) f.set([0x81, 0x00, 0x00, 0x05], 12);
  f.set([0x08, 0x00], l3 - 2);
  f.set([0x45, tos, 0, 46, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2], l3);
  const checksum = ~headerSum(f, l3) & 0xffff;
  f[l3 + 10] = checksum >>> 8;
  f[l3 + 11] = checksum & 0xff;
  return f;
}

function ipv6Frame(): Uint8Array {
  const f = new Uint8Array(14 + 40 + 8);
  f.set(MAC_B, 0);
  f.set(MAC_A, 6);
  f.set([0x86, 0xdd, 0x6f, 0xf1, 0x23, 0x45], 12); // version 6, traffic class 0xff, flow label 0x12345
  return f;
}

t.test('crafted batches', async (t) => {
  const harness = new PluginHarness(plugin, {
    ports: [{ name: 'vm1', bridge: 'br0' }, { name: 'vm2', bridge: 'br0' }],
    config: { dscp: 46, ports: ['vm1'] },
  });
  const truncated = ipv4Frame(0).subarray(0, 30);
  const arp = ipv4Frame(0);
  arp.set([0x08, 0x06], 12);
  const out = harness.run('vm1', [ipv4Frame(0x03), ipv4Frame(0, true), ipv6Frame(), truncated, arp]).map((o) => o.frame);
  t.equal(out[0][15], (46 << 2) | 3, 'IPv4: DSCP 46, the ECN bits kept');
  t.equal(headerSum(out[0], 14), 0xffff, 'and the header checksum still right');
  t.equal(out[1][19] >>> 2, 46, 'behind a VLAN tag too');
  t.equal(headerSum(out[1], 18), 0xffff);
  const tc = ((out[2][14] & 0x0f) << 4) | (out[2][15] >>> 4);
  t.equal(tc, (46 << 2) | 3, 'IPv6: traffic class DSCP 46, ECN kept');
  t.equal(out[2][15] & 0x0f, 1, 'the flow label untouched');
  t.same(out[3], truncated, 'a frame too short for its IPv4 header is left alone');
  t.same(harness.counts('vm1'), { marked: 3, not_ip: 2 }, 'counted per port');
  const other = harness.run('vm2', [ipv4Frame(0)]);
  t.equal(other[0].frame[15], 0, 'packets of ports not listed are not marked');
});

t.test('config mistakes name the field', async (t) => {
  t.throws(() => plugin.parseConfig!({ dscp: 64 }), { message: /^dscp: must be an integer from 0 to 63/ });
  t.throws(() => plugin.parseConfig!({ dscp: 1, ports: 'vm1' }), { message: /^ports: must be an array/ });
  t.throws(() => plugin.parseConfig!({ dscp: 1, colour: 'red' }), { message: /^colour: unknown key/ });
  t.same(plugin.parseConfig!({ dscp: 10 }), { dscp: 10, ports: [] }, 'every port by default');
});

t.test('in vrouter, between two ports', async (t) => {
  const path = fileURLToPath(new URL('./index.ts', import.meta.url));
  const vr = await startVrouter({
    ports: ['vm1', 'vm2'].map((name) => ({ name, socket: `{dir}/${name}.sock`, bridge: 'br0' })),
    pmd: { cores: [1] },
    plugins: { dscp: { path, dscp: 46, ports: ['vm1'] } },
    pipeline: ['dscp', 'bridge'],
  });
  t.teardown(() => vr.stop());
  const [a, b] = [await startDevice(vr.sockets.vm1), await startDevice(vr.sockets.vm2)];
  t.teardown(() => [a, b].forEach((d) => d.close()));
  const rx = Array.from({ length: 10 }, () => postRxBuffer(b.rx, 2048));
  for (let i = 0; i < 10; i++) sendFrame(a.tx, ipv4Frame(0));
  a.kick();
  let got = 0;
  await waitFor('10 frames on vm2', () => (got += b.rx.takeUsed().length) >= 10 || undefined);
  const at = rx[9].off + NET_HDR_LEN;
  t.equal(b.ram.bytes[at + 15] >>> 2, 46, 'the frame that reached vm2 carries DSCP 46');
  t.equal(headerSum(b.ram.bytes, at + 14), 0xffff, 'with a right checksum');
  const stats = await vr.stats();
  t.same(stats.vm1.plugins.dscp, { drops: { plugin_error: 0 }, counters: { marked: 10, not_ip: 0 } }, 'the plugin counted them on vm1');
});
