// Commit-confirmed (PUT /config?confirm=S) against its races, on the endpoint's own logic
// with a backend that applies in order, one at a time, each apply taking a while (as the
// supervisor's compiles do): a rollback that comes due while another change is applied
// undoes that change too, and says so; a plain PUT keeps the change waiting; a change
// waiting for its confirm is not saved to the file. The real daemon's commit-confirmed is
// in admin.test.ts.
import t from 'tap';
import { adminRoutes, type AdminBackend } from '../../src/admin/api.ts';
import { ApiError } from '../../src/admin/http.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const doc = (tag: string) => ({ ports: [{ name: 'a', socket: `/tmp/${tag}.sock` }] });
const tagOf = (d: Record<string, unknown>) => /\/tmp\/(\w+)\.sock/.exec((d.ports as { socket: string }[])[0].socket)![1];

function endpoint(applyMs: number) {
  let current: Record<string, unknown> = doc('P0');
  let chain: Promise<unknown> = Promise.resolve();
  const saved: string[] = [];
  const backend = {
    document: () => current,
    apply(document: unknown) {
      const run = chain.then(async () => {
        await sleep(applyMs);
        current = document as Record<string, unknown>;
        return { mode: 'live', plugins: [], diff: [] };
      });
      chain = run.catch(() => undefined);
      return run;
    },
    save: () => (saved.push(tagOf(current)), '/etc/vrouter.json'),
  } as unknown as AdminBackend;
  const routes = adminRoutes(backend);
  const route = (method: string, path: string) => routes.find((r) => r.method === method && r.path === path)!;
  const call = async (method: string, path: string, query = '', body?: unknown) => route(method, path).handle({ method, params: {}, query: new URLSearchParams(query), body });
  return { call, inForce: () => tagOf(current), saved, settled: () => chain };
}

t.test('a rollback that comes due while another change is applied undoes it too, and that change says so', async (t) => {
  const e = endpoint(300);
  await e.call('PUT', '/config', 'confirm=1', doc('A')); // A in force at ~300 ms, its rollback due at ~1300
  await sleep(800);
  // B applies from ~1100 to ~1400: the rollback comes due meanwhile, and is applied after it.
  await t.rejects(e.call('PUT', '/config', 'confirm=3', doc('B')), new ApiError(409, 'VR_ROLLED_BACK', '', 'applied, then rolled back with the earlier change that was not confirmed in time: the config in force is the one before that change'));
  await sleep(50);
  await e.settled();
  t.equal(e.inForce(), 'P0', 'the config before A is in force');
  await t.rejects(e.call('POST', '/config/confirm'), { status: 404, code: 'VR_NOT_FOUND' }, 'nothing waits for a confirm');
  await sleep(3600);
  t.equal(e.inForce(), 'P0', 'and no later rollback brings back A, which was never confirmed');
});

t.test('a plain PUT keeps the change waiting for its confirm; a change waiting is not saved', async (t) => {
  const e = endpoint(10);
  await e.call('PUT', '/config', 'confirm=1', doc('A'));
  await t.rejects(e.call('POST', '/config/save'), { status: 409, code: 'VR_UNCONFIRMED' }, 'not saved while it waits');
  t.same(e.saved, []);
  await e.call('PUT', '/config', '', doc('B'));
  await sleep(1300);
  t.equal(e.inForce(), 'B', 'no rollback: the plain commit kept the change');
  await t.rejects(e.call('POST', '/config/confirm'), { status: 404, code: 'VR_NOT_FOUND' }, 'nothing waits any more');
  await e.call('POST', '/config/save');
  t.same(e.saved, ['B'], 'then saved');
});

t.test('without a confirm the change before is back; with one it stays', async (t) => {
  const e = endpoint(10);
  await e.call('PUT', '/config', 'confirm=1', doc('A'));
  await sleep(1200);
  await e.settled();
  t.equal(e.inForce(), 'P0', 'rolled back');
  await e.call('PUT', '/config', 'confirm=1', doc('C'));
  await e.call('POST', '/config/confirm');
  await sleep(1200);
  t.equal(e.inForce(), 'C', 'confirmed: it stays');
});
