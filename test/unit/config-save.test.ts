// POST /config/save on the real daemon: the config in force replaces the file whole (never
// a part of it), a symbolic link to the file stays a link, a save that cannot be written
// answers why and leaves the file as it was, and a file removed is written again.
import t from 'tap';
import { lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { adminClient } from '../support/admin-client.ts';
import { ROUTED } from '../support/routed-config.ts';
import { startVrouter } from '../support/vrouter-process.ts';

t.test('the config in force saved over a symbolic link to the file, then a save that cannot be written', async (t) => {
  const vr = await startVrouter(ROUTED);
  t.teardown(() => vr.stop());
  // The file the daemon was started on becomes a link to one elsewhere (as under config management).
  const link = join(vr.dir, 'config.json');
  const etc = join(vr.dir, 'etc');
  mkdirSync(etc);
  const real = join(etc, 'vrouter.json');
  renameSync(link, real);
  symlinkSync('etc/vrouter.json', link);
  const api = adminClient(vr);
  t.equal((await api.call('POST', '/routes', { prefix: '198.51.100.0/24', via: '10.0.2.2' })).status, 200, 'a route added live');

  const saved = await api.call('POST', '/config/save');
  t.same({ status: saved.status, json: saved.json }, { status: 200, json: { saved: real } }, 'saved to the file the link points to');
  t.ok(lstatSync(link).isSymbolicLink(), 'the link is still a link');
  const written = JSON.parse(readFileSync(real, 'utf8'));
  t.same(written.routes.map((r: { prefix: string }) => r.prefix), ['192.0.2.0/24', '198.51.100.0/24'], 'the file holds the route added live');
  t.equal(statSync(real).mode & 0o777, 0o600, 'mode 0600');
  t.same(readdirSync(etc), ['vrouter.json'], 'nothing left beside it');
  t.match((await api.call('POST', '/reload')).json, { mode: 'none' }, 'read back, it is the config in force');

  // The file beside it cannot be made: a directory holds its name.
  mkdirSync(`${real}.${vr.proc.pid}.tmp`);
  t.equal((await api.call('POST', '/routes', { prefix: '203.0.113.0/24', via: '10.0.2.2' })).status, 200, 'a route added live');
  const before = readFileSync(real, 'utf8');
  const refused = await api.call('POST', '/config/save');
  t.equal(refused.status, 500, 'refused: 500');
  t.match(refused.json, { error: { code: 'VR_SAVE', message: new RegExp(`the config was not saved, ${real.replaceAll('.', '\\.')} is as it was: EISDIR`) } }, 'the answer says why');
  t.equal(readFileSync(real, 'utf8'), before, 'the file is as it was');
  t.ok(lstatSync(link).isSymbolicLink(), 'the link too');
  t.ok(vr.alive(), 'vrouter runs on');

  // The file removed since the start: saved where the daemon was told it is.
  rmSync(link);
  t.same((await api.call('POST', '/config/save')).json, { saved: link }, 'saved to the path it was started with');
  t.same(JSON.parse(readFileSync(link, 'utf8')).routes.length, 3, 'with the three routes');
});
