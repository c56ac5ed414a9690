// The price of idle back-off: vrouter sleeps after some idle time, and the first frame
// after it must wake it (the guest's kick) and still arrive. Measures, over repeated
// trials, the time from a frame made available on one port to its arrival on the other,
// after the PMD has slept, with the default back-off and with pure polling.
import { startDevice } from '../../test/support/vhost-frontend.ts';
import { bridgeConfig, startVrouter } from '../../test/support/vrouter-process.ts';
import { ethernetFrame, postRxBuffer, sendFrame } from '../../test/support/virtio-driver.ts';
import { setThreadCpus } from '../../src/sys/libc.ts';
import { cpus } from 'node:os';

const TRIALS = 30;
const IDLE_MS = Number(process.env.IDLE_MS ?? 100);

/** Latencies in µs of the first frame after IDLE_MS of silence. */
async function firstPacketLatencies(pmd: object): Promise<number[]> {
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd }));
  const a = await startDevice(vr.sockets.a);
  const b = await startDevice(vr.sockets.b);
  const latencies: number[] = [];
  try {
    for (let i = 0; i < TRIALS + 2; i++) {
      postRxBuffer(b.rx, 2048);
      await new Promise((r) => setTimeout(r, IDLE_MS));
      const start = process.hrtime.bigint();
      sendFrame(a.tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 50, i));
      a.kick(); // what wakes a sleeping PMD, as a guest driver's notification does
      while (b.rx.takeUsed().length === 0) {
        if (process.hrtime.bigint() - start > 1_000_000_000n) throw new Error('a frame did not arrive within 1 s');
      }
      if (i >= 2) latencies.push(Number(process.hrtime.bigint() - start) / 1000);
    }
  } finally {
    a.close();
    b.close();
    await vr.stop();
  }
  return latencies.sort((x, y) => x - y);
}

export interface FirstPacketResult {
  mode: string;
  medianUs: number;
  maxUs: number;
}

export async function measureFirstPacket(): Promise<FirstPacketResult[]> {
  // This thread busy-waits for the frame: keep it off the PMD's CPU (the highest), or the
  // scheduler makes the woken PMD wait for its turn. vrouter, started after this, inherits it.
  const all = cpus().map((_, i) => i);
  setThreadCpus(all.slice(0, -1));
  const out: FirstPacketResult[] = [];
  for (const [mode, pmd] of [['idle back-off (default)', {}], ['pure polling (sleepMaxUs 0)', { sleepMaxUs: 0 }]] as const) {
    const l = await firstPacketLatencies({ cores: [cpus().length - 1], ...pmd });
    out.push({ mode, medianUs: l[Math.floor(l.length / 2)], maxUs: l[l.length - 1] });
  }
  setThreadCpus(all);
  return out;
}

if (import.meta.main) {
  for (const r of await measureFirstPacket()) console.log(`first frame after ${IDLE_MS} ms idle, ${r.mode}: median ${r.medianUs.toFixed(0)} µs, max ${r.maxUs.toFixed(0)} µs`);
}
