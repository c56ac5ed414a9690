// Hostile frontends next to real ones: two DPDK virtio-user ports (dpdk-testpmd, flowgen)
// forward through vrouter while the hostile-frontend suite's control-path attacks run
// against two other ports and a hostile guest attacks through its queues on a third. The
// rate stays close to what it is without the attacks (the attacked ports wait for their
// share of the control thread), every frame is accounted for, and the daemon gives back
// every fd, mapping and thread.
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { runTestpmd, testpmdPrerequisite } from './lib/testpmd.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { processResources, waitFor } from '../support/traffic.ts';
import { adminClient } from '../support/admin-client.ts';
import { controlPathAttacks, dataPathAttacks } from '../hostile/lib.ts';

const missing = testpmdPrerequisite();
if (missing) t.fail(`cannot run dpdk-testpmd: ${missing}`);

/**
 * Quiet and attacked windows alternate within one testpmd run: this machine changes speed
 * from run to run, so only windows side by side compare.
 */
const WINDOWS = 8;
const WINDOW_MS = 1000;
const WARM_UP_MS = 2500;

t.test('two testpmd ports forward at their rate while other ports are attacked', async (t) => {
  const vr = await startVrouter({
    // d, the hostile guest, shares the PMD but not the bridge: its floods go to e (never
    // connected), so that what testpmd counts is testpmd's own traffic.
    ports: ['a', 'b', 'h', 'g', 'd', 'e'].map((name) => ({ name, socket: `{dir}/${name}.sock`, bridge: 'de'.includes(name) ? 'br1' : 'br0' })),
    pmd: { cores: [1] },
  });
  t.teardown(() => vr.stop());
  const idle = processResources(vr.proc.pid!);
  const ports = [
    { socket: vr.sockets.a, mac: '02:00:00:00:00:0a' },
    { socket: vr.sockets.b, mac: '02:00:00:00:00:0b' },
  ];
  const seconds = (WARM_UP_MS + WINDOWS * WINDOW_MS) / 1000 + 1;
  const run = runTestpmd(ports, { mode: 'flowgen', seconds, frameSize: 64 });

  let attacking = false;
  let stopped = false;
  let passes = 0;
  let guestRounds = 0;
  const controlAttacks = (async () => {
    while (!stopped) {
      if (attacking) await controlPathAttacks(passes++ % 2 ? vr.sockets.h : vr.sockets.g);
      else await sleep(20);
    }
  })();
  const guestAttacks = (async () => {
    while (!stopped) {
      if (attacking) guestRounds += await dataPathAttacks(vr.sockets.d, () => !attacking || stopped);
      else await sleep(20);
    }
  })();
  const delivered = async () => {
    const s = await vr.stats();
    return s.a.tx_packets + s.b.tx_packets;
  };
  await sleep(WARM_UP_MS);
  const rates = { quiet: [] as number[], attacked: [] as number[] };
  let before = await delivered();
  for (let w = 0; w < WINDOWS; w++) {
    attacking = w % 2 === 1;
    const start = performance.now();
    await sleep(WINDOW_MS);
    const now = await delivered();
    (attacking ? rates.attacked : rates.quiet).push(((now - before) * 1000) / (performance.now() - start));
    before = now;
  }
  attacking = false;
  stopped = true;
  await Promise.all([controlAttacks, guestAttacks]);
  const result = await run;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const quiet = mean(rates.quiet);
  const attacked = mean(rates.attacked);
  const mpps = (xs: number[]) => xs.map((x) => (x / 1e6).toFixed(2)).join(' ');
  t.ok(quiet > 50_000, `without attacks: ${(quiet / 1e6).toFixed(2)} Mpps (windows: ${mpps(rates.quiet)})`, { log: result.log.slice(-1500) });
  t.ok(passes >= 2, `${passes} passes of the control-path attacks ran`);
  t.ok(guestRounds >= 10, `and ${guestRounds} rounds of the hostile guest`);
  t.ok(attacked >= 0.5 * quiet, `under attack: ${(attacked / 1e6).toFixed(2)} Mpps (windows: ${mpps(rates.attacked)}), ${((100 * attacked) / quiet).toFixed(0)} % of the rate without`);

  // During the windows h's passes alternate with g's, and its share may refill in between
  // (h waited 0 to 35 times in CI runs, g 57 to 95): passes in a row on h, each finding
  // its share spent by the ones before, show that h too is held to it. Two sufficed until
  // a CI run on a slow machine, where a pass is slower and the share refills more during
  // it: then more, up to six.
  const admin = adminClient(vr);
  const throttled = async () => new Map(((await admin.call('GET', '/ports')).json as { name: string; state: { controlThrottled: number } }[]).map((p) => [p.name, p.state.controlThrottled]));
  await controlPathAttacks(vr.sockets.h);
  let portStates: Map<string, number>;
  for (let k = 1; k < 6; k++) {
    await controlPathAttacks(vr.sockets.h);
    portStates = await throttled();
    if (portStates.get('h')! > 0) break;
  }
  const waits = (name: string) => portStates.get(name)!;
  t.ok(waits('h') > 0 && waits('g') > 0, `the attacked ports waited for their share of the control thread (h ${waits('h')} times, g ${waits('g')})`);
  t.equal(waits('a') + waits('b'), 0, "testpmd's ports never did");

  const s = await vr.stats();
  const [p0, p1] = result.ports;
  t.equal(s.a.rx_packets, p0.txPackets, 'vrouter took every frame port 0 sent');
  t.equal(s.b.tx_packets, p1.rxPackets + p1.rxMissed, 'and port 1 received every frame vrouter delivered');
  const hostile = s.d;
  t.ok(hostile.rx_packets > 0 && hostile.drops.bad_descriptor + hostile.drops.frame_too_long > 0, `the hostile guest's frames were taken (${hostile.rx_packets}) and its chains counted as bad`);
  t.ok(hostile.plugins.bridge.counters.mac_learning_refused > 0, `its random sources hit its MAC limit (${hostile.plugins.bridge.counters.mac_learning_refused} not learned)`);
  t.ok(vr.alive(), 'vrouter runs');
  await waitFor('fds, mappings and threads given back', () => {
    const now = processResources(vr.proc.pid!);
    return now.fds <= idle.fds && now.guestMappings === idle.guestMappings && now.threads === idle.threads;
  }, 10000);
  t.pass(`vrouter holds what it held before any frontend came: ${JSON.stringify(processResources(vr.proc.pid!))}`);
});
