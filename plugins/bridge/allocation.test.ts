// The bridge stage allocates nothing in steady state: frames between guests it learned,
// frames to a MAC it never saw (flooded), frames from a port under port security, and
// frames from sources past a port's MAC limit (switched, not learned). The MACs' third
// bytes are 0x80 or more: as u32 their low words are no small integers, and such a number
// passed to a function V8 did not inline is a heap number at every call. Measured with V8
// inlining nothing (test/support/steady-allocation.ts says why).
import t from 'tap';
import { checkSteady, stageBursts, steadyAllocation } from '../../test/support/steady-allocation.ts';
import { EGRESS_FLOOD, type Plugin } from '../../src/pipeline/api.ts';
import { udp4 } from '../../test/support/frames.ts';
import bridge from './index.ts';

const BURST = 32;
/** bursts a call of the driver runs */
const CHUNK = 100;
const WARM_UP = 30_000;
const MEASURED = 20_000;

/** guest i behind port a (32 of them), and the one guest of each other port */
const guestA = (i: number) => `52:54:c0:00:0a:${i.toString(16).padStart(2, '0')}`;
const GUEST_B = '52:54:d0:00:00:0b';
const GUEST_C = '52:54:e0:00:00:0c';
const ports = [
  { name: 'a', bridge: 'br0', settings: { macLimit: 256 } },
  { name: 'b', bridge: 'br0', settings: { macLimit: 256, mac: GUEST_B } },
  { name: 'c', bridge: 'br0', settings: { macLimit: 256, mac: GUEST_C, portSecurity: true } },
  { name: 'd', bridge: 'br0', settings: { macLimit: 4 } },
];

const frame = (srcMac: string, dstMac: string, i: number) => udp4({ srcMac, dstMac, src: '192.168.1.2', dst: '192.168.1.3', srcPort: 1000 + i, dstPort: 2000, payload: 18 });

interface Mode {
  name: string;
  port: number;
  frame: (i: number) => Uint8Array;
  /** what the last burst's frames were decided */
  egress: number;
}
const MODES: Mode[] = [
  { name: '32 guests behind a, to the guest of b', port: 0, frame: (i) => frame(guestA(i), GUEST_B, i), egress: 1 },
  { name: 'from b, to the guests behind a', port: 1, frame: (i) => frame(GUEST_B, guestA(i), i), egress: 0 },
  { name: 'to a MAC never seen: flooded', port: 0, frame: (i) => frame(guestA(i), '52:54:f0:00:00:99', i), egress: EGRESS_FLOOD },
  { name: 'from c under port security, to b', port: 2, frame: (i) => frame(GUEST_C, GUEST_B, i), egress: 1 },
  { name: 'from d, 32 sources past its limit of 4 (switched, not learned), to b', port: 3, frame: (i) => frame(guestA(i), GUEST_B, i), egress: 1 },
];

for (const mode of MODES) {
  t.test(mode.name, async (t) => {
    const frames = Array.from({ length: BURST }, (_, i) => mode.frame(i));
    const { run, once, egress } = await stageBursts(bridge as Plugin<unknown, unknown>, { ports }, frames, mode.port, CHUNK);
    // The guests behind a are learned first, as a burst of theirs has them learned.
    once(Array.from({ length: BURST }, (_, i) => frame(guestA(i), GUEST_B, i)), 0);
    for (let c = 0; c < WARM_UP / CHUNK; c++) run();
    t.same(egress(), Array(BURST).fill(mode.egress), 'every frame of the burst decided as expected: the path is the one measured');
    checkSteady(t, await steadyAllocation(run, MEASURED / CHUNK), MEASURED);
  });
}
