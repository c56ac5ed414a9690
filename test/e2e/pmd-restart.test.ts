// Let it crash: a PMD terminated during a guest's ping flood is restarted by the
// supervisor; forwarding resumes within a second, the loss is bounded and shows in the
// guest's counters, and the other PMD never stops.
import t from 'tap';
import { bootGuest, guestPrerequisites } from './lib/guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

t.test('PMD 0 killed during a ping flood', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br0', rxqAffinity: { 0: 1 } },
      { name: 'b', socket: '{dir}/b.sock', bridge: 'br0', rxqAffinity: { 0: 0 } },
      { name: 'c', socket: '{dir}/c.sock', bridge: 'br0', rxqAffinity: { 0: 1 } },
    ],
    pmd: { cores: [0, 1] },
  });
  t.teardown(() => vr.stop());
  const b = bootGuest({ name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24' }], script: 'vr_wait_peer 10.0.0.2 60; sleep 40', timeoutS: 90 });
  t.teardown(() => b.kill());
  // c pings a: both ports on PMD 1, which is never killed.
  const c = bootGuest({ name: 'c', nics: [{ socket: vr.sockets.c, ip: '10.0.0.4/24' }], script: 'vr_wait_peer 10.0.0.2 60 && echo C-READY && vr_ping 10.0.0.2 250 56 0.02', timeoutS: 90 });
  t.teardown(() => c.kill());
  // a floods b (on PMD 0) with pings, 50 per second, for 6 s.
  const a = bootGuest({
    name: 'a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24' }],
    script: 'vr_wait_peer 10.0.0.3 60 && echo FLOOD-START && vr_ping 10.0.0.3 300 56 0.02; vr_ping 10.0.0.3 10',
    timeoutS: 90,
  });
  t.teardown(() => a.kill());
  await a.waitForConsole(/FLOOD-START/, 60000);
  await c.waitForConsole(/C-READY/, 60000);
  await new Promise((r) => setTimeout(r, 2000));
  const before = await vr.stats();
  vr.proc.kill('SIGUSR2'); // terminates PMD 0 as a crash would
  const [ra, rc] = await Promise.all([a.done, c.done]);
  const log = vr.stderr();
  t.match(log, /pmd0 exited with code \d+: restarting it/, 'the supervisor saw the PMD die and restarted it');
  t.match(log, /port b: vring 1 \(guest tx\) running, size 256, resumed from the used ring/, "b's queues went back to the new PMD");
  const [flood, after] = ra.results.filter((r) => r.test === 'ping');
  const lost = Number(flood?.sent) - Number(flood?.recv);
  t.ok(flood && lost <= 50, `loss bounded: ${lost} of ${flood?.sent} pings (1 s at 50/s is 50)`, { console: ra.console });
  t.ok(lost >= 0, 'no more replies than requests');
  t.equal(after?.loss_pct, '0', 'after the restart: 0 % loss');
  const other = rc.results.find((r) => r.test === 'ping');
  t.equal(other?.loss_pct, '0', `c <-> a on the other PMD never stopped (${other?.recv}/${other?.sent})`, { console: rc.console });
  t.ok(vr.alive(), 'vrouter is still running');
  const end = await vr.stats();
  for (const port of ['a', 'b', 'c'] as const) {
    t.ok(end[port].rx_packets >= before[port].rx_packets && end[port].tx_packets >= before[port].tx_packets, `${port}: counters kept counting across the restart`);
  }
  t.ok(end.b.rx_packets > before.b.rx_packets, 'b forwarded again after the restart');
});
