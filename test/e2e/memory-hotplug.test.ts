// Memory hotplug under QEMU: with CONFIGURE_MEM_SLOTS offered, QEMU hands vrouter its
// guest RAM one region at a time (ADD_MEM_REG), and a DIMM plugged over QMP while the
// guest pings through vrouter becomes one more region, while the ping carries on.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { bootGuest, guestPrerequisites, qmp } from './lib/guest.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

const DIMM_BYTES = 128 * 2 ** 20;

t.test('a DIMM plugged into a guest that pings through vrouter', async (t) => {
  const vr = await startVrouter(bridgeConfig());
  t.teardown(() => vr.stop());
  const work = mkdtempSync(join(tmpdir(), 'vrouter-hotplug-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const qmpSocket = join(work, 'qmp.sock');
  const b = bootGuest({ name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24' }], script: 'vr_wait_peer 10.0.0.2 60; sleep 40', timeoutS: 100 });
  t.teardown(() => b.kill());
  const a = bootGuest({
    name: 'a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24' }],
    qmpSocket,
    hotplug: { slots: 4, maxMem: '1G' },
    // The ping runs over the hotplug; then the guest says how much RAM it sees.
    script: [
      'vr_wait_peer 10.0.0.3 60 || exit 1',
      'echo VR-PINGING',
      'vr_ping 10.0.0.3 25 56 0.2',
      'vr_result test=meminfo total_kb=$(awk \'/^MemTotal/ { print $2 }\' /proc/meminfo)',
    ].join('\n'),
    timeoutS: 100,
  });
  t.teardown(() => a.kill());

  await a.waitForConsole(/^VR-PINGING/m, 80000);
  const regionsAtBoot = (vr.stderr().match(/port a: memory region added/g) ?? []).length;
  t.ok(regionsAtBoot > 0, `QEMU sent its boot RAM in ${regionsAtBoot} ADD_MEM_REG(s)`);
  t.notMatch(vr.stderr(), /port a: memory table of/, 'and no SET_MEM_TABLE');
  const started = Date.now();
  await qmp(qmpSocket, [
    { execute: 'object-add', arguments: { 'qom-type': 'memory-backend-memfd', id: 'dimm0mem', size: DIMM_BYTES, share: true } },
    { execute: 'device_add', arguments: { driver: 'pc-dimm', id: 'dimm0', memdev: 'dimm0mem' } },
  ]);
  const added = new RegExp(`port a: memory region added \\(guest 0x[0-9a-f]+ \\+0x${DIMM_BYTES.toString(16)}, user 0x[0-9a-f]+\\): (\\d+) region\\(s\\)`);
  const deadline = Date.now() + 10000;
  while (!added.test(vr.stderr()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const match = added.exec(vr.stderr());
  t.ok(match, `vrouter mapped the ${DIMM_BYTES / 2 ** 20} MiB DIMM ${Date.now() - started} ms after the QMP commands were sent`, { log: vr.stderr() });
  if (match) t.equal(Number(match[1]), regionsAtBoot + 1, 'one region more than at boot');

  const ra = await a.done;
  b.kill();
  t.equal(ra.rc, 0, 'guest a finished its script', { console: ra.console });
  const ping = ra.results.find((r) => r.test === 'ping');
  t.equal(ping?.loss_pct, '0', `the ping across the hotplug: ${ping?.recv}/${ping?.sent} answered`);
  const meminfo = ra.results.find((r) => r.test === 'meminfo');
  t.comment(`guest MemTotal after the hotplug: ${meminfo?.total_kb} kB (the guest kernel onlines the DIMM only if it supports memory hotplug)`);
  const stats = await vr.stats();
  t.equal(stats.a.queue_errors, 0, 'no queue errors');
  t.ok(vr.alive(), 'vrouter still runs');
});
