// The bridge stage on crafted batches: learning, forwarding to a learned port, flooding,
// same-port drops, port security, the learning limit, and packets decided before it.
import t from 'tap';
import bridge from './index.ts';
import { EGRESS_FLOOD, EGRESS_UNDECIDED, type PacketBatch, type PluginContext, type PortInfo } from '../../src/pipeline/api.ts';

const mac = (last: number) => [0x52, 0x54, 0, 0, 0, last];
const frame = (dst: number[], src: number[]) => Uint8Array.from([...dst, ...src, 0x08, 0x00, ...new Array(46).fill(0)]);

function batchOf(frames: Uint8Array[], ingress: number): PacketBatch {
  const data = new Uint8Array(frames.length * 64);
  frames.forEach((f, i) => data.set(f, i * 64));
  const egress = new Int32Array(frames.length).fill(EGRESS_UNDECIDED);
  return {
    count: frames.length,
    ingress,
    egress,
    data,
    offset: (i) => i * 64,
    length: (i) => frames[i].length,
    dropAs: (i, code) => void (egress[i] = -1000 - code),
    dropped: (i) => egress[i] <= -1000,
  };
}

function setup(settings: Record<string, unknown>[]) {
  const ports: PortInfo[] = settings.map((s, index) => ({ index, name: `p${index}`, bridge: (s.bridge as string | null) ?? null, settings: { macLimit: 256, portSecurity: false, mac: null, ...s } }));
  const bridges = [...new Set(ports.map((p) => p.bridge).filter((b): b is string => b !== null))];
  const sizes = bridge.sharedMemory!(undefined, { ports, bridges, pmdCount: 1 });
  const counts = new Map<string, number>();
  const reasons = ['same_port', 'source_mac_denied'];
  const ctx: PluginContext<unknown> = {
    config: undefined,
    pmd: 0,
    pmdCount: 1,
    ports,
    bridges,
    shared: Object.fromEntries(Object.entries(sizes).map(([k, n]) => [k, new SharedArrayBuffer(n)])),
    log: { info() {}, warn() {} },
    dropCode: (r) => reasons.indexOf(r),
    counterId: () => 0,
    count: (port, _id, n) => counts.set(`p${port}`, (counts.get(`p${port}`) ?? 0) + n),
  };
  return { state: bridge.createState(ctx), counts, same: -1000 - 0, denied: -1000 - 1 };
}

t.test('learning, forwarding, flooding, same-port drops', async (t) => {
  const { state, same } = setup([{ bridge: 'br0' }, { bridge: 'br0' }, { bridge: 'br0' }, { bridge: null }]);
  const first = batchOf([frame(mac(2), mac(1))], 1);
  bridge.process(first, state);
  t.equal(first.egress[0], EGRESS_FLOOD, 'an unknown destination is flooded (and p1 learned as the home of ...:01)');
  const reply = batchOf([frame(mac(1), mac(2)), frame(mac(1), mac(2)), frame([255, 255, 255, 255, 255, 255], mac(2))], 2);
  bridge.process(reply, state);
  t.same([...reply.egress], [1, 1, EGRESS_FLOOD], 'to the learned port; broadcast floods');
  const back = batchOf([frame(mac(2), mac(1))], 1);
  bridge.process(back, state);
  t.same([...back.egress], [2], '...:02 was learned on p2 meanwhile');
  const hairpin = batchOf([frame(mac(1), mac(9))], 1);
  bridge.process(hairpin, state);
  t.same([...hairpin.egress], [same], 'to the port it came from: same_port');
  const alone = batchOf([frame(mac(1), mac(7))], 3);
  bridge.process(alone, state);
  t.same([...alone.egress], [EGRESS_UNDECIDED], 'a port in no bridge: left undecided (no_destination)');
  const decided = batchOf([frame(mac(1), mac(2)), frame(mac(1), mac(2))], 2);
  decided.egress[0] = 3;
  decided.dropAs(1, 5);
  bridge.process(decided, state);
  t.same([...decided.egress], [3, -1005], 'packets an earlier stage decided for are left alone');
});

t.test('port security and the learning limit', async (t) => {
  const { state, counts, denied } = setup([{ bridge: 'br0', portSecurity: true, mac: '52:54:00:00:00:0a' }, { bridge: 'br0', macLimit: 2 }, { bridge: 'br0' }]);
  const spoofed = batchOf([frame(mac(2), mac(0x0a)), frame(mac(2), mac(0x0b))], 0);
  bridge.process(spoofed, state);
  t.same([...spoofed.egress], [EGRESS_FLOOD, denied], 'only the configured mac may be a source');
  const many = batchOf([1, 2, 3, 4, 5].map((n) => frame(mac(0x0a), mac(0x20 + n))), 1);
  bridge.process(many, state);
  t.equal(counts.get('p1'), 3, 'a port at its macLimit (2) learns no more: 3 frames counted as mac_learning_refused');
  t.same([...many.egress], [0, 0, 0, 0, 0], 'the frames are forwarded all the same (to the static entry of p0)');
  const toRefused = batchOf([frame(mac(0x25), mac(0x30))], 2);
  bridge.process(toRefused, state);
  t.same([...toRefused.egress], [EGRESS_FLOOD], 'a source that was not learned is flooded to');
});
