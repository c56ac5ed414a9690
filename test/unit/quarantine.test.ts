// A port whose guest was being served when a PMD died of an error is not handed back to
// the restarted PMD: its frontend is disconnected and new ones are refused for a while.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Dataplane } from '../../src/vhost/dataplane-link.ts';
import { PortEndpoint } from '../../src/vhost/port-endpoint.ts';
import { VhostFrontend } from '../support/vhost-frontend.ts';
import { Req } from '../../src/vhost/protocol.ts';

/** A data plane that carries out every command at once. */
const dataplane: Dataplane = {
  request: async () => ({ id: 0 }),
  requestOn: async () => ({ id: 0 }),
  ownersOf: () => [0],
  ownerOf: () => 0,
  unmap: () => undefined,
};

/** Port h listening in a directory of its own, what it logs kept in `lines`. */
function listeningPort(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-quarantine-'));
  const lines: string[] = [];
  const log = { info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m) };
  const settings = {
    index: 0, name: 'h', queues: 1, mtu: 1500, memoryPolicy: 'warn' as const, offloads: true, type: 'vhost-user' as const, interface: null, socket: join(dir, 'h.sock'), mode: 'server' as const,
    socketMode: 0o600, socketGroup: null, peerUid: null, mirror: null,
  };
  const endpoint = new PortEndpoint(settings, dataplane, log);
  endpoint.start();
  t.teardown(async () => {
    await endpoint.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { endpoint, settings, lines };
}

t.test('quarantine after a PMD crash while serving the port', async (t) => {
  const { endpoint, settings, lines } = listeningPort(t);

  const innocent = await VhostFrontend.connect(settings.socket);
  innocent.send(Req.GET_QUEUE_NUM);
  t.equal(await innocent.replyU64(), 1n, 'connected');
  await endpoint.resync(0, null);
  innocent.send(Req.GET_QUEUE_NUM);
  t.equal(await innocent.replyU64(), 1n, 'a PMD restart that is not the port\'s doing leaves it connected');

  await endpoint.resync(0, 'TypeError: something in the data path');
  t.ok(await innocent.closedByPeer(), 'the frontend of the port being served is disconnected');
  innocent.close();
  t.match(lines.join('\n'), /port h: quarantined for 5 s: pmd0 died while serving it \(TypeError: something in the data path\)/);
  const refused = await VhostFrontend.connect(settings.socket);
  t.ok(await refused.closedByPeer(), 'a new frontend is refused during the quarantine');
  refused.close();
  t.match(lines.join('\n'), /refused a frontend: quarantined for \d s more/);

  await new Promise((r) => setTimeout(r, 5200));
  const later = await VhostFrontend.connect(settings.socket);
  t.teardown(() => later.close());
  later.send(Req.GET_QUEUE_NUM);
  t.equal(await later.replyU64(), 1n, 'after the quarantine the port takes a frontend again');

  await endpoint.resync(0, 'the same again');
  t.ok(await later.closedByPeer());
  t.match(lines.join('\n'), /quarantined for 10 s/, 'a second quarantine lasts twice as long');
});

t.test('a frontend waiting for the port when it is quarantined is refused, not attached in its place', async (t) => {
  const { endpoint, settings, lines } = listeningPort(t);
  const culprit = await VhostFrontend.connect(settings.socket);
  t.teardown(() => culprit.close());
  culprit.send(Req.GET_QUEUE_NUM);
  t.equal(await culprit.replyU64(), 1n, 'connected');
  // Its second connection waits, held back, for the port to be free (as a restarted QEMU's would).
  const second = await VhostFrontend.connect(settings.socket);
  t.teardown(() => second.close());
  await new Promise((r) => setTimeout(r, 50));
  await endpoint.resync(0, 'TypeError: something in the data path');
  t.ok(await culprit.closedByPeer(), 'the culprit is disconnected');
  t.ok(await second.closedByPeer(500), 'and its waiting connection refused, well before the hold-back would have ended it');
  t.match(lines.join('\n'), /refused a frontend: quarantined for \d s more/);
  t.equal(endpoint.state().connected, false, 'the port has no frontend');
});
