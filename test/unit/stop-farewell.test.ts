// vrouter stopped (SIGTERM) sends its last router advertisements before it lets the guests
// go: router lifetime 0 (RFC 4861 6.2.5), so that hosts stop using it as their default
// router at once. A death of the data plane (it is started again) sends none.
import t from 'tap';
import { routerSolicitation, type ParsedFrame } from '../support/frames.ts';
import { dataplanePids, waitFor } from '../support/traffic.ts';
import { rxFrames } from '../support/host-prober.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { sendFrame } from '../support/virtio-driver.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const advertisements = (frames: ParsedFrame[]) => frames.filter((f) => f.ndp?.type === 134).map((f) => f.ndp!.routerLifetime);

t.test('stopped, vrouter sends each guest a router advertisement of lifetime 0; a data-plane death sends none', async (t) => {
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24', '2001:db8:1::1/64'] }], pipeline: ['routing'] });
  let stopped = false;
  t.teardown(() => (stopped ? undefined : vr.stop()));
  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  const received = rxFrames(a);
  // The advertisement vrouter sent as the port came up may have found no buffer posted: a
  // solicitation gets one (within 3 s of the last: once those are over).
  sendFrame(a.tx, routerSolicitation({ src: 'fe80::5054:ff:fe00:a', sourceLinkAddr: '52:54:00:00:00:0a', srcMac: '52:54:00:00:00:0a' }));
  a.kick();
  const seen: ParsedFrame[] = [];
  await waitFor('an advertisement', () => (seen.push(...received()), advertisements(seen).length > 0) || undefined, 5000);
  t.same(advertisements(seen), [1800], 'a default router for 1800 s');

  const [dataplane] = dataplanePids(vr.proc.pid!);
  process.kill(dataplane, 'SIGKILL');
  await waitFor('the spare took over', () => /took over/.test(vr.stderr()) || undefined, 10_000);
  // The new data plane's routing stage advertises, at once or when solicited.
  const meanwhile = received();
  sendFrame(a.tx, routerSolicitation({ src: 'fe80::5054:ff:fe00:a', sourceLinkAddr: '52:54:00:00:00:0a', srcMac: '52:54:00:00:00:0a' }));
  a.kick();
  const after: ParsedFrame[] = [...meanwhile];
  await waitFor('an advertisement from the new data plane', () => (after.push(...received()), advertisements(after).length > 0) || undefined, 5000);
  t.ok(advertisements(after).every((lifetime) => lifetime === 1800), `no farewell for a data-plane death: the router goes on, a default router (${advertisements(after).join(', ')})`);

  stopped = true;
  t.equal(await vr.stop(), 0, 'vrouter stopped cleanly');
  const last = advertisements(received());
  t.equal(last.at(-1), 0, `the last advertisement the guest got: router lifetime 0 (${last.join(', ')})`);
});
