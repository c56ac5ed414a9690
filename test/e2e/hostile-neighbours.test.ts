// Hostile frontends next to real ones: two DPDK virtio-user ports (dpdk-testpmd, flowgen)
// forward through vrouter while the hostile-frontend suite's control-path attacks run
// against two other ports and a hostile guest attacks through its queues on a third. The
// rate stays close to what it is without the attacks, every frame is accounted for, and
// the daemon gives back every fd, mapping and thread.
import t from 'tap';
import { runTestpmd, testpmdPrerequisite, type TestpmdRun } from './lib/testpmd.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { processResources, waitFor } from '../support/traffic.ts';
import { controlPathAttacks, dataPathAttacks } from '../hostile/lib.ts';

const missing = testpmdPrerequisite();
if (missing) t.fail(`cannot run dpdk-testpmd: ${missing}`);

const SECONDS = 5;

t.test('two testpmd ports forward at their rate while two other ports are attacked', async (t) => {
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
  const rate = (run: TestpmdRun) => run.ports.reduce((sum, p) => sum + p.rxPackets, 0) / SECONDS;

  const quiet = await runTestpmd(ports, { mode: 'flowgen', seconds: SECONDS, frameSize: 64 });
  const quietRate = rate(quiet);
  t.ok(quietRate > 50_000, `without attacks: ${(quietRate / 1e6).toFixed(2)} Mpps`, { log: quiet.log.slice(-1500) });

  let attacking = true;
  let passes = 0;
  const attacks = (async () => {
    while (attacking) {
      await controlPathAttacks(passes % 2 ? vr.sockets.h : vr.sockets.g);
      passes++;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const guestAttacks = dataPathAttacks(vr.sockets.d, () => !attacking);
  const before = await vr.stats();
  const attacked = await runTestpmd(ports, { mode: 'flowgen', seconds: SECONDS, frameSize: 64 });
  attacking = false;
  await attacks;
  const guestRounds = await guestAttacks;
  const attackedRate = rate(attacked);
  const after = await vr.stats();
  t.ok(passes >= 2, `${passes} passes of the control-path attacks ran meanwhile`);
  t.ok(guestRounds >= 10, `and ${guestRounds} rounds of the hostile guest`);
  const hostile = after.d;
  t.ok(hostile.rx_packets > 0 && hostile.drops.bad_descriptor + hostile.drops.frame_too_long > 0, `the hostile guest's frames were taken (${hostile.rx_packets}) and its chains counted as bad`);
  t.ok(hostile.plugins.bridge.counters.mac_learning_refused > 0, `its random sources hit its MAC limit (${hostile.plugins.bridge.counters.mac_learning_refused} not learned)`);
  t.ok(attackedRate >= 0.5 * quietRate, `under attack: ${(attackedRate / 1e6).toFixed(2)} Mpps, ${((100 * attackedRate) / quietRate).toFixed(0)} % of the rate without`);
  const [p0, p1] = attacked.ports;
  t.equal(after.a.rx_packets - before.a.rx_packets, p0.txPackets, 'vrouter took every frame port 0 sent');
  t.equal(after.b.tx_packets - before.b.tx_packets, p1.rxPackets + p1.rxMissed, 'and port 1 received every frame vrouter delivered');
  t.ok(vr.alive(), 'vrouter runs');
  await waitFor('fds, mappings and threads given back', () => {
    const now = processResources(vr.proc.pid!);
    return now.fds <= idle.fds && now.guestMappings === idle.guestMappings && now.threads === idle.threads;
  }, 10000);
  t.pass(`vrouter holds what it held before any frontend came: ${JSON.stringify(processResources(vr.proc.pid!))}`);
});
