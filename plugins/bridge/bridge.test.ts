// The bridge stage on crafted batches: learning, forwarding to a learned port, flooding,
// same-port drops, port security, the learning limit, and packets decided before it.
import t from 'tap';
import bridge from './index.ts';
import { PluginHarness, type HarnessPort } from '../../src/pipeline/testing.ts';
import type { Plugin, PacketBatch } from '../../src/pipeline/api.ts';

const mac = (last: number) => [0x52, 0x54, 0, 0, 0, last];
const frame = (dst: number[], src: number[]) => Uint8Array.from([...dst, ...src, 0x08, 0x00, ...new Array(46).fill(0)]);

function setup(settings: Record<string, unknown>[]) {
  const ports: HarnessPort[] = settings.map((s, i) => ({
    name: `p${i}`,
    bridge: (s.bridge as string | null) ?? null,
    settings: { macLimit: 256, portSecurity: false, mac: null, ...s },
  }));
  return new PluginHarness(bridge, { ports });
}
const where = (h: PluginHarness, port: string, frames: Uint8Array[]) => h.run(port, frames).map((o) => (o.to === 'drop' ? o.reason : o.to));

t.test('learning, forwarding, flooding, same-port drops', async (t) => {
  const h = setup([{ bridge: 'br0' }, { bridge: 'br0' }, { bridge: 'br0' }, { bridge: null }]);
  t.same(where(h, 'p1', [frame(mac(2), mac(1))]), ['flood'], 'an unknown destination is flooded (and p1 learned as the home of ...:01)');
  t.same(where(h, 'p2', [frame(mac(1), mac(2)), frame(mac(1), mac(2)), frame([255, 255, 255, 255, 255, 255], mac(2))]), ['p1', 'p1', 'flood'], 'to the learned port; broadcast floods');
  t.same(where(h, 'p1', [frame(mac(2), mac(1))]), ['p2'], '...:02 was learned on p2 meanwhile');
  t.same(where(h, 'p1', [frame(mac(1), mac(9))]), ['same_port'], 'to the port it came from: same_port');
  t.same(where(h, 'p3', [frame(mac(1), mac(7))]), ['undecided'], 'a port in no bridge: left undecided (no_destination)');
});

t.test('a group or all-zero source address is dropped, never learned', async (t) => {
  // p1 may learn one address: a group source taking it would leave ...:01 unlearned.
  const h = setup([{ bridge: 'br0' }, { bridge: 'br0', macLimit: 1 }, { bridge: 'br0' }]);
  const group = [0x53, 0x54, 0, 0, 0, 5];
  const zero = [0, 0, 0, 0, 0, 0];
  const broadcast = [255, 255, 255, 255, 255, 255];
  t.same(where(h, 'p1', [frame(mac(2), group), frame(mac(2), zero), frame(broadcast, broadcast), frame(mac(2), mac(1))]), ['source_mac_invalid', 'source_mac_invalid', 'source_mac_invalid', 'flood'], 'from a group address, the zero address, broadcast: dropped; from ...:01, to an unknown ...:02: flooded');
  t.same(where(h, 'p2', [frame(group, mac(2)), frame(mac(1), mac(2))]), ['flood', 'p1'], 'to the group address: flooded; to ...:01: p1, its one learned address');
  t.same(h.counts('p1'), { source_mac_invalid: 3 }, 'nothing refused on p1');
});

t.test("IEEE 802.1D's link-constrained groups are not relayed; other multicast floods", async (t) => {
  const h = setup([{ bridge: 'br0' }, { bridge: 'br0' }]);
  const reserved = [0x00, 0x01, 0x02, 0x03, 0x0e, 0x0f].map((last) => [0x01, 0x80, 0xc2, 0, 0, last]);
  t.same(where(h, 'p0', reserved.map((dst) => frame(dst, mac(1)))), reserved.map(() => 'link_constrained'), 'STP, pause, LACP, 802.1X, LLDP and the rest of 01:80:c2:00:00:0x: dropped');
  const near = [[0x01, 0x80, 0xc2, 0, 0, 0x10], [0x01, 0x00, 0x5e, 0, 0, 0x01], [0x33, 0x33, 0, 0, 0, 1]];
  t.same(where(h, 'p0', near.map((dst) => frame(dst, mac(1)))), ['flood', 'flood', 'flood'], '01:80:c2:00:00:10, IPv4 and IPv6 multicast: flooded');
});

t.test('packets an earlier stage decided for are left alone', async (t) => {
  // A stage in front of the bridge that sends the first packet to p0 and drops the second.
  const front: Plugin<unknown, { code: number; inner: unknown }> = {
    name: 'front',
    version: '1',
    apiVersion: bridge.apiVersion,
    dropReasons: [...bridge.dropReasons!, ['test', 'dropped by the test']],
    counters: bridge.counters,
    sharedMemory: bridge.sharedMemory,
    createState: (ctx) => ({ code: ctx.dropCode('test'), inner: bridge.createState(ctx) }),
    process(batch: PacketBatch, s) {
      batch.egress[0] = 0;
      batch.dropAs(1, s.code);
      bridge.process(batch, s.inner as Parameters<typeof bridge.process>[1]);
    },
  };
  const h = new PluginHarness(front, { ports: [{ name: 'p0', bridge: 'br0', settings: { macLimit: 256 } }, { name: 'p1', bridge: 'br0', settings: { macLimit: 256 } }] });
  t.same(where(h as PluginHarness, 'p1', [frame(mac(1), mac(2)), frame(mac(1), mac(2))]), ['p0', 'test']);
});

t.test('port security and the learning limit', async (t) => {
  const h = setup([{ bridge: 'br0', portSecurity: true, mac: '52:54:00:00:00:0a' }, { bridge: 'br0', macLimit: 2 }, { bridge: 'br0' }]);
  t.same(where(h, 'p0', [frame(mac(2), mac(0x0a)), frame(mac(2), mac(0x0b))]), ['flood', 'source_mac_denied'], 'only the configured mac may be a source');
  t.same(where(h, 'p1', [1, 2, 3, 4, 5].map((n) => frame(mac(0x0a), mac(0x20 + n)))), ['p0', 'p0', 'p0', 'p0', 'p0'], 'the frames are forwarded all the same (to the static entry of p0)');
  t.equal(h.counts('p1').mac_learning_refused, 3, 'a port at its macLimit (2) learns no more: 3 frames counted as mac_learning_refused');
  t.same(where(h, 'p2', [frame(mac(0x25), mac(0x30))]), ['flood'], 'a source that was not learned is flooded to');
});

t.test('a MAC that moves to a port another PMD polls is found there within two seconds, not when the old entry ages out', async (t) => {
  const ports: HarnessPort[] = ['p0', 'p1', 'p2'].map((name) => ({ name, bridge: 'br0', settings: { macLimit: 256, portSecurity: false, mac: null } }));
  const pmd0 = new PluginHarness(bridge, { ports, pmd: 0, pmdCount: 2 });
  const pmd1 = new PluginHarness(bridge, { ports, pmd: 1, pmdCount: 2, shareWith: pmd0 as PluginHarness<unknown, unknown> });
  let now = 1_000_000_000_000;
  pmd0.clock = () => now;
  pmd1.clock = () => now;
  // PMD 0 polls p0 and p2; PMD 1 polls p1. The VM of ...:07 is on p0, then migrates to p1.
  where(pmd0, 'p0', [frame(mac(2), mac(7))]);
  t.same(where(pmd0, 'p2', [frame(mac(7), mac(2))]), ['p0'], 'on p0 first');
  now += 3000;
  where(pmd1, 'p1', [frame(mac(2), mac(7))]);
  t.same(where(pmd0, 'p2', [frame(mac(7), mac(2))]), ['p1'], "moved: PMD 0's own entry, 3 s old, loses to PMD 1's, seen now");
  where(pmd0, 'p0', [frame(mac(2), mac(8))]);
  t.same(where(pmd0, 'p2', [frame(mac(8), mac(2))]), ['p0'], 'an entry of its own seen this second stands, without a look at the others');
});

t.test("another PMD's table of before a relayout names no port outside the bridge", async (t) => {
  // PMD 1 learned under the ports as they were; PMD 0 runs on them as they are now (a port
  // added or removed), where bridge 0 is another bridge and slot 1 another bridge's port.
  const ports = (bridges: string[]): HarnessPort[] => bridges.map((b, i) => ({ name: `p${i}`, bridge: b, settings: { macLimit: 256, portSecurity: false, mac: null } }));
  const before = new PluginHarness(bridge, { ports: ports(['br0', 'br0', 'br1', 'br1']), pmd: 1, pmdCount: 2 });
  const now = new PluginHarness(bridge, { ports: ports(['br1', 'br0', 'br0', 'br1']), pmd: 0, pmdCount: 2, shareWith: before as PluginHarness<unknown, unknown> });
  t.same(where(before, 'p1', [frame(mac(2), mac(1))]), ['flood'], 'PMD 1 learns ...:01 on p1 (slot 1), in its table of bridge 0 (br0 then)');
  t.same(where(now, 'p0', [frame(mac(1), mac(5))]), ['flood'], "PMD 0, in br1 (bridge 0 now): slot 1 is br0's now, not an answer: flooded within br1");
  t.same(where(now, 'p3', [frame(mac(5), mac(6))]), ['p0'], 'its own learning still answers');
});
