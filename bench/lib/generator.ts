// The traffic generator and sink in one process: dpdk-testpmd flowgen over two virtio-user
// ports (or two kernel interfaces), its forwarding lcore on CPU 0 so that the backend under test owns CPU 1 (two busy
// pollers on one CPU collapse to kpps). The rate through the backend is what the two
// ports receive, from testpmd's one-second samples after a warm-up.
import { setTimeout as sleep } from 'node:timers/promises';
import { dpdkPrefix, stop, track, waitFor } from './processes.ts';

export const MAC_A = '02:00:00:00:00:0a';
export const MAC_B = '02:00:00:00:00:0b';
const WARMUP_SAMPLES = 2;

/**
 * The ports' MTU for frames longer than a standard Ethernet frame (1518 bytes): 9000. 64 and
 * 1518 run with each backend's defaults (undefined).
 */
export const jumboMtu = (frameSize: number): number | undefined => (frameSize > 1518 ? 9000 : undefined);

/**
 * testpmd's settings for frames up to 9000 bytes (9018 with the Ethernet header and CRC):
 * mbufs whose data room (9216 after the 128-byte headroom) holds one whole, and the ports'
 * MTU raised. They go before --txpkts, which testpmd checks against the mbuf size given
 * ahead of it (after it, 9000 is refused and flowgen sends its default 64 bytes).
 */
export function testpmdFrameArgs(frameSize: number): string[] {
  return jumboMtu(frameSize) === undefined ? [] : ['--mbuf-size=9344', '--max-pkt-len=9018'];
}

export interface Generator {
  /** waits until it forwards, measures for `seconds`, stops; frames per second received */
  measure(seconds: number): Promise<{ pps: number; samples: number }>;
  /** waits until traffic comes back through the backend */
  flowing(): Promise<void>;
  /**
   * The one-second samples that lie wholly between two times (performance.now()): frames
   * per second received, both ports together.
   */
  ratesBetween(from: number, to: number): number[];
  stop(): Promise<void>;
}

/** testpmd prints a sample a little after its second ends: a sample seen this late still counts as inside. */
const SAMPLE_LATENESS_MS = 150;

/** The virtqueue layout the generator's ports offer (virtio 1.2 2.7 and 2.8). */
export type Rings = 'split' | 'packed';

/**
 * server: the virtio-user ports listen and the backend connects (OVS vhostuserclient).
 * rings: packed offers RING_PACKED (with IN_ORDER, which virtio-user offers by default).
 * queueSize: the entries of each virtqueue; virtio-user's default is 256, as QEMU's.
 */
export function startGenerator(sockets: [string, string], frameSize: number, server: boolean, rings: Rings = 'split', queueSize?: number): Generator {
  const vdev = (i: number, path: string, mac: string) =>
    `net_virtio_user${i},path=${path},mac=${mac}${server ? ',server=1' : ''}${rings === 'packed' ? ',packed_vq=1' : ''}${queueSize === undefined ? '' : `,queue_size=${queueSize}`}`;
  return startTestpmd([vdev(0, sockets[0], MAC_A), vdev(1, sockets[1], MAC_B)], frameSize);
}

/**
 * The generator on two kernel interfaces (DPDK's AF_PACKET driver): sending on a veth, or
 * on a TAP interface (its frames go to whoever holds the TAP), and receiving what comes back.
 * The interfaces should have MAC_A and MAC_B.
 */
export function startInterfaceGenerator(interfaces: [string, string], frameSize: number): Generator {
  // Rings large enough for a burst of 1518-byte frames.
  const vdev = (i: number, iface: string) => `net_af_packet${i},iface=${iface},qpairs=1,blocksz=4096,framesz=2048,framecnt=4096`;
  return startTestpmd([vdev(0, interfaces[0]), vdev(1, interfaces[1])], frameSize);
}

function startTestpmd(vdevs: [string, string], frameSize: number): Generator {
  const p = track('stdbuf', [
    '-oL', 'dpdk-testpmd', '--no-huge', '-m', '512', '--no-pci', '--file-prefix', dpdkPrefix('gen'), '--lcores', '0@1,1@0',
    '--vdev', vdevs[0], '--vdev', vdevs[1], '--',
    '--forward-mode=flowgen', '--stats-period', '1', '--total-num-mbufs=16384', ...testpmdFrameArgs(frameSize), `--txpkts=${frameSize}`, // flowgen takes the FCS off: 64 gives 60-byte frames, 64 on the wire
    `--eth-peer=0,${MAC_B}`, `--eth-peer=1,${MAC_A}`, '--nb-cores=1', '-a',
  ]);
  // Each statistics block, with when it was printed: rates of windows within one run.
  const samples: { at: number; pps: number }[] = [];
  let block = { sum: 0, ports: 0 };
  let partial = '';
  p.proc.stdout!.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.includes('Port statistics ===')) block = { sum: 0, ports: 0 };
      const rx = /Rx-pps:\s+(\d+)/.exec(line);
      if (rx === null) continue;
      block.sum += Number(rx[1]);
      if (++block.ports === 2) samples.push({ at: performance.now(), pps: block.sum });
    }
  });
  const started = () => /Port statistics ===/.test(p.output()) || p.proc.exitCode !== null;
  return {
    async flowing() {
      await waitFor('the generator to start forwarding', started, 60000);
      if (p.proc.exitCode !== null) throw new Error(`dpdk-testpmd exited:\n${p.output().slice(-1500)}`);
      await waitFor('traffic through the backend', () => (samples.at(-1)?.pps ?? 0) > 0, 30000);
    },
    ratesBetween(from, to) {
      return samples.filter((s) => s.at - 1000 >= from && s.at <= to + SAMPLE_LATENESS_MS).map((s) => s.pps);
    },
    async measure(seconds) {
      await waitFor('the generator to start forwarding', started, 60000);
      if (p.proc.exitCode !== null) throw new Error(`dpdk-testpmd exited:\n${p.output().slice(-1500)}`);
      const from = p.output().length;
      await sleep((seconds + WARMUP_SAMPLES * 2) * 1000);
      // Each statistics block lists every port; a sample is the sum over ports, kept only
      // once traffic flows (the backend may connect after the generator started).
      const blocks = p.output().slice(from).split('Port statistics ===').slice(1);
      const rates = blocks
        .map((b) => [...b.matchAll(/Rx-pps:\s+(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0))
        .filter((r) => r > 0)
        .slice(WARMUP_SAMPLES);
      const pps = rates.length ? rates.reduce((a, b) => a + b, 0) / rates.length : 0;
      return { pps, samples: rates.length };
    },
    stop: () => stop(p),
  };
}
