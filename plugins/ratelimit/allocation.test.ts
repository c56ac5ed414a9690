// The stage's steady state allocates nothing: in each mode (srTCM and trTCM, colour-blind and
// colour-aware, bytes and packets, pass, remark and drop, ACL-named, in-port, out-port and
// per-address policers), thousands of bursts after a warm-up leave the heap as it was and
// start no garbage collection. One object per burst would be hundreds of KiB here.
// Measured with V8 inlining nothing (test/support/steady-allocation.ts says why): with
// inlining, a trTCM policer that passed a double to a helper failed now and then, 31 bytes a
// burst.
import t from 'tap';
import { checkSteady, steadyAllocation } from '../../test/support/steady-allocation.ts';
import { Batch } from '../../src/dataplane/batch.ts';
import { PacketPool } from '../../src/dataplane/packet-pool.ts';
import { PluginHarness } from '../../src/pipeline/testing.ts';
import { udp4, udp6 } from '../../test/support/frames.ts';
import ratelimit from './index.ts';

const BURST = 32;
/**
 * Bursts are run CHUNK at a time by one function called again and again, so that V8 optimizes
 * it whole: a loop that runs once, however long, starts each time in the interpreter and
 * allocates there until it is replaced while running (on-stack replacement).
 */
const CHUNK = 100;
/** bursts before measuring: V8 optimizes process(), what it calls, and the driver */
const WARM_UP = 30_000;
const MEASURED = 20_000;

interface Mode {
  name: string;
  policers: unknown[];
  /** frame i of each burst */
  frame: (i: number) => Uint8Array;
  /** what earlier stages decided for packet i: an out-port, an ACL's mark */
  egress?: (i: number) => number;
  mark?: (i: number) => number;
}

const v4 = (i: number, o: { src?: string; dst?: string; tos?: number } = {}) =>
  udp4({ src: o.src ?? '10.0.0.1', dst: o.dst ?? '10.9.0.1', tos: o.tos, srcPort: 1000 + i, dstPort: 2000, payload: 18 });
/** AF11, AF12, AF13 and best effort in turn: green, yellow, red and green to a colour-aware policer */
const AF_TOS = [10 << 2, 12 << 2, 14 << 2, 0];

const MODES: Mode[] = [
  { name: 'srTCM on the in-port, all green', policers: [{ name: 'p', cir: '100gbit', apply: [{ inPort: 'a' }] }], frame: (i) => v4(i) },
  {
    name: 'srTCM over its rate: yellow remarked, red dropped',
    policers: [{ name: 'p', cir: '1mbit', cbs: 1600, ebs: 1600, actions: { yellow: { remark: 'af12' }, red: 'drop' }, apply: [{ inPort: 'a' }] }],
    frame: (i) => v4(i, { tos: 1 }),
  },
  {
    name: 'srTCM colour-aware, packets per second',
    policers: [{ name: 'p', cir: '2mpps', cbs: 40, ebs: 40, colorAware: true, actions: { green: { remark: 'cs1' }, red: 'drop' }, apply: [{ inPort: 'a' }] }],
    frame: (i) => v4(i, { tos: AF_TOS[i % 4] }),
  },
  {
    name: 'trTCM on the in-port, remarking green',
    policers: [{ name: 'p', type: 'trTCM', cir: '100gbit', pir: '200gbit', actions: { green: { remark: 'af11' } }, apply: [{ inPort: 'a' }] }],
    frame: (i) => v4(i),
  },
  {
    name: 'trTCM colour-aware over its rates',
    policers: [{ name: 'p', type: 'trTCM', cir: '1mbit', pir: '2mbit', colorAware: true, actions: { yellow: { remark: 'af12' }, red: 'drop' }, apply: [{ inPort: 'a' }] }],
    frame: (i) => v4(i, { tos: AF_TOS[i % 4] }),
  },
  {
    name: 'a policer ACL rules name, through the mark',
    policers: [{ name: 'other', cir: '1gbit' }, { name: 'named', cir: '10gbit' }],
    frame: (i) => v4(i),
    mark: (i) => (i % 3 === 0 ? 0 : 1 + (i % 2)),
  },
  {
    name: 'an out-port policer, after an in-port one',
    policers: [{ name: 'in', cir: '100gbit', apply: [{ inPort: 'a' }] }, { name: 'out', type: 'trTCM', cir: '1gbit', pir: '1gbit', apply: [{ outPort: 'c' }] }],
    frame: (i) => v4(i),
    egress: (i) => 1 + (i % 2),
  },
  {
    name: 'per-source buckets, 4 sources a burst',
    policers: [{ name: 'hosts', cir: '100gbit', apply: [{ perSource: '10.0.0.0/8' }] }],
    frame: (i) => v4(i, { src: `10.0.0.${1 + (i % 4)}` }),
  },
  {
    // Addresses past 128.0.0.0: their words do not fit a small integer.
    name: 'per-source buckets, more sources than room: the overflow bucket',
    policers: [{ name: 'hosts', cir: '10mbit', apply: [{ perSource: '192.168.0.0/16', maxAddresses: 16 }] }],
    frame: (i) => v4(i, { src: `192.168.${i * 7}.${200 + i}` }),
  },
  {
    name: 'per-destination buckets on IPv6, for one out-port',
    policers: [{ name: 'hosts', type: 'trTCM', cir: '1gbit', pir: '2gbit', apply: [{ perDestination: 'fd00::/8', outPort: 'b' }] }],
    frame: (i) => udp6({ src: 'fd00:1::1', dst: `fd12:3456:789a:1:8000::${i % 5}`, srcPort: 1000, dstPort: 2000, payload: 18 }),
    egress: (i) => (i % 4 === 3 ? 2 : 1),
  },
];

/** Runs CHUNK bursts of the mode's frames through the stage; time moves 1 µs a burst. */
async function driver(mode: Mode): Promise<() => void> {
  const h = await PluginHarness.create(ratelimit, { ports: [{ name: 'a' }, { name: 'b' }, { name: 'c' }], config: { policers: mode.policers } });
  const pool = PacketPool.standalone(256);
  const batch = new Batch(pool);
  const egress = new Int32Array(BURST);
  const mark = new Uint32Array(BURST);
  for (let i = 0; i < BURST; i++) {
    const frame = mode.frame(i);
    const handle = pool.alloc();
    batch.handles[i] = handle;
    pool.data.set(frame, pool.frameOffset(handle));
    pool.length[handle] = frame.length;
    egress[i] = mode.egress?.(i) ?? -1;
    mark[i] = mode.mark?.(i) ?? 0;
  }
  const state = h.state;
  // The time lives in the batch's field: a double in a variable this closure shares would be a
  // heap number per store, the test's allocation, not the stage's.
  batch.now = performance.timeOrigin + performance.now();
  return () => {
    for (let b = 0; b < CHUNK; b++) {
      batch.begin(0, BURST);
      for (let i = 0; i < BURST; i++) {
        if (egress[i] >= 0) batch.egress[i] = egress[i];
        batch.mark[i] = mark[i];
      }
      batch.now += 0.001;
      ratelimit.process(batch, state);
    }
  };
}

for (const mode of MODES) {
  t.test(mode.name, async (t) => {
    const run = await driver(mode);
    for (let c = 0; c < WARM_UP / CHUNK; c++) run();
    checkSteady(t, await steadyAllocation(run, MEASURED / CHUNK), MEASURED);
  });
}
