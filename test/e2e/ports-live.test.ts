// A VM attached while vrouter runs, as an orchestrator would: `vrouterctl port add` makes a
// routed port, a Linux guest boots on it and pings a guest on another port; `vrouterctl port
// del` takes it away again. A ping flow between the two guests that were there all along
// loses nothing through both changes.
import t from 'tap';
import { join } from 'node:path';
import { bootGuest, guestPrerequisites, STEADY_PING_RESULT, steadyPing } from './lib/guest.ts';
import { vrouterctl as ctl } from './lib/vrouterctl.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

t.test('a port added at run time gets a guest that pings; removing it disturbs no one', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'] },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'] },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing'],
  });
  t.teardown(() => vr.stop());
  const b = bootGuest({
    name: 'b',
    nics: [{ socket: vr.sockets.b, ip: '10.0.2.2/24' }],
    script: 'ip route add default via 10.0.2.1 && echo VR-STEP b-ready && sleep 150',
    timeoutS: 180,
  });
  t.teardown(() => b.kill());
  // a pings b all along; meanwhile it waits for the guest on the new port to answer.
  const a = bootGuest({
    name: 'a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.1.2/24' }],
    script: `
ip route add default via 10.0.1.1
vr_wait_peer 10.0.2.2 60
${steadyPing('10.0.2.2')}
vr_wait_peer 10.0.3.2 120 && echo VR-STEP c-reached
ping -c 5 -i 0.2 -W 2 10.0.3.2 > /tmp/c 2>&1
vr_result test=c recv=$(sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p' /tmp/c)
# The flow goes on until c is gone (the port deleted): until then c answers.
n=0; while [ $n -lt 150 ] && ping -c 1 -W 1 10.0.3.2 > /dev/null 2>&1; do sleep 0.2; n=$((n + 1)); done
vr_result test=c_gone ok=$([ $n -lt 150 ] && echo 1 || echo 0)
${STEADY_PING_RESULT}
`,
    timeoutS: 180,
  });
  t.teardown(() => a.kill());
  await b.waitForConsole(/VR-STEP b-ready/, 90_000);
  await a.waitForConsole(/VR-STEP steady-started/, 90_000);

  const socketC = join(vr.dir, 'c.sock');
  const added = await ctl(vr, 'port', 'add', 'c', socketC, 'address', '10.0.3.1/24');
  t.equal(added.status, 0, `vrouterctl port add: ${added.out.trim().split('\n')[0]}`);
  const c = bootGuest({
    name: 'c',
    nics: [{ socket: socketC, ip: '10.0.3.2/24' }],
    script: 'ip route add default via 10.0.3.1 && echo VR-STEP c-ready && sleep 150',
    timeoutS: 180,
  });
  t.teardown(() => c.kill());
  await a.waitForConsole(/VR-STEP c-reached/, 120_000);
  const ports = await ctl(vr, 'ports');
  t.match(ports.out, /\bc\b/, 'vrouterctl ports lists the new port');

  await a.waitForConsole(/VR-RESULT .*test=c /, 10_000);
  const removed = await ctl(vr, 'port', 'del', 'c');
  t.equal(removed.status, 0, `vrouterctl port del: ${removed.out.trim().split('\n')[0]}`);
  const refused = await ctl(vr, 'port', 'del', 'c');
  t.equal(refused.status, 1, 'a second port del is refused: no such port');

  const ra = await a.done;
  const reached = ra.results.find((r) => r.test === 'c');
  t.ok(Number(reached?.recv) >= 4, `the guest on the added port answered ${reached?.recv} of 5 pings`);
  const steady = ra.results.find((r) => r.test === 'steady');
  t.equal(ra.results.find((r) => r.test === 'c_gone')?.ok, '1', 'a saw c go once its port was deleted');
  // It ran from before the port was added until after it was gone, at 5 requests a second
  // (fewer while the guest forks its pings slowly under emulation).
  t.ok(Number(steady?.sent) >= Math.max(10, 2.5 * Number(steady?.secs)), `the flow between a and b ran all along: ${steady?.sent} pings in ${steady?.secs} s`);
  t.equal(steady?.recv, steady?.sent, `and lost nothing through both changes: ${steady?.recv} of ${steady?.sent}`, { console: ra.console.slice(-2000) });
  t.match(vr.stderr(), /PMDs running on the new layout after \d+ ms/);
});
