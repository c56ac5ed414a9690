// TCP between two Linux guests under QEMU on two vrouter ports in one bridge (iperf3, guest
// a to guest b): with the ports' default, "offloads": true (checksum and TSO negotiated:
// the guests leave checksums to do and send super-frames, which pass between them as they
// are), and with "offloads": false on both ports (segments at most the MTU, checksums done
// by the guests). Alternated, `rounds` times each. The guests run under TCG here and are
// their own bottleneck, so the ratio on / off is the result, not the rates.
import { bootGuest, guestPrerequisites } from '../../test/e2e/lib/guest.ts';
import { startVrouter } from '../../test/support/vrouter-process.ts';
import { median } from './stats.ts';

export interface GuestTcpRun {
  offloads: boolean;
  /** iperf3's receiver rate */
  mbps: number;
  /** super-frames vrouter took from the sending guest (none without offloads) */
  superFrames: number;
}

export interface GuestTcpResult {
  seconds: number;
  runs: GuestTcpRun[];
  /** medians, Mbit/s */
  onMbps: number;
  offMbps: number;
  /** on / off */
  ratio: number;
}

async function iperfOnce(offloads: boolean, seconds: number): Promise<GuestTcpRun> {
  const vr = await startVrouter({ ports: ['a', 'b'].map((name) => ({ name, socket: `{dir}/${name}.sock`, bridge: 'br0', offloads })) });
  const guests = [];
  try {
    const timeoutS = seconds + 90;
    guests.push(bootGuest({ name: 'tcp-b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24' }], script: 'vr_iperf_server', timeoutS }));
    guests.push(bootGuest({ name: 'tcp-a', nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24' }], script: `vr_wait_peer 10.0.0.3 60 && vr_iperf_client 10.0.0.3 ${seconds}`, timeoutS }));
    const [, a] = await Promise.all(guests.map((g) => g.done));
    const mbps = Number(a.results.find((r) => r.test === 'iperf3')?.receiver_mbps ?? 0);
    if (a.rc !== 0 || !(mbps > 0)) throw new Error(`iperf3 between the guests failed (offloads ${offloads ? 'on' : 'off'}): ${a.console.slice(-1500)}`);
    const stats = await vr.stats();
    return { offloads, mbps, superFrames: stats.a.offloads.rx_gso_frames };
  } finally {
    for (const g of guests) g.kill();
    await vr.stop();
  }
}

export async function measureGuestTcp(rounds: number, seconds: number): Promise<GuestTcpResult> {
  const missing = guestPrerequisites();
  if (missing) throw new Error(missing);
  const runs: GuestTcpRun[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const offloads of [true, false]) runs.push(await iperfOnce(offloads, seconds));
  }
  const rate = (offloads: boolean) => median(runs.filter((r) => r.offloads === offloads).map((r) => r.mbps));
  return { seconds, runs, onMbps: rate(true), offMbps: rate(false), ratio: rate(true) / rate(false) };
}

/** One line for the bench's summary. */
export function describeGuestTcp(r: GuestTcpResult): string {
  const each = (offloads: boolean) => r.runs.filter((x) => x.offloads === offloads).map((x) => x.mbps.toFixed(0)).join(' ');
  return `guest to guest TCP, bridged (2 TCG guests, iperf3 ${r.seconds} s, medians): offloads on ${r.onMbps.toFixed(0)} Mbit/s (${each(true)}), off ${r.offMbps.toFixed(0)} Mbit/s (${each(false)}), on / off = ${r.ratio.toFixed(2)}`;
}

if (import.meta.main) {
  const r = await measureGuestTcp(Number(process.argv[2] ?? 1), Number(process.argv[3] ?? 5));
  console.log(describeGuestTcp(r));
  console.log(JSON.stringify(r.runs));
}
