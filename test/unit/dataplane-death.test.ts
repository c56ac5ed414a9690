// A frontend that sets its device up while the data-plane process is being replaced (it
// died): nothing it asks is refused for that; the new data plane gets its memory and rings
// and forwards. Test frontends, so that the set-up lands inside the restart's window.
import t from 'tap';
import { dataplanePids, trafficFlows, waitFor } from '../support/traffic.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';

const MAC = { a: '02:00:00:00:00:0a', b: '02:00:00:00:00:0b' };

t.test('a device set up while the data plane restarts is accepted and forwards after it', async (t) => {
  // No spare: the cold start leaves a window of a few hundred ms to set up in.
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { spare: false } }));
  t.teardown(() => vr.stop());
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => b.close());
  const [first] = dataplanePids(vr.proc.pid!);
  process.kill(first, 'SIGKILL');
  // SET_MEM_TABLE and the vring set-up, each waiting for its ack, while no data plane runs.
  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  await waitFor('the new data plane', () => /a new data-plane process \(pid \d+\) runs the PMDs/.test(vr.stderr()) || undefined, 10_000);
  const log = vr.stderr();
  const died = log.search(/the data-plane process died \(signal SIGKILL\)/);
  const table = log.search(/port a: memory table of 1 region/);
  const back = log.search(/a new data-plane process \(pid \d+\) runs the PMDs/);
  t.ok(died >= 0 && died < table && table < back, 'its memory table was taken between the death and the new data plane');
  t.equal(await trafficFlows(a, b, 20, MAC.a, MAC.b), 20, 'a -> b through the new data plane');
  t.equal(await trafficFlows(b, a, 20, MAC.b, MAC.a), 20, 'b -> a');
  t.notMatch(vr.stderr(), /port a: (connection closed|SET_MEM_TABLE:)/, 'port a was never refused nor disconnected');
});
