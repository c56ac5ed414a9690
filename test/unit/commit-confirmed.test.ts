// Commit-confirmed (PUT /config?confirm=S) against its races: the endpoint's handlers and
// commit-confirmed.ts over a queue of applies that runs them in order, one at a time, each
// taking a while (as the supervisor's compiles do). A rollback that comes due while another
// change is applied undoes that change too, and says so; it goes back to the config in
// force when the change's turn came; a plain PUT keeps the change waiting; a change waiting
// is not saved to the file, nor while it applies. The real daemon's commit-confirmed is in
// admin.test.ts.
import t from 'tap';
import { adminRoutes, type AdminBackend } from '../../src/admin/api.ts';
import { ApiError } from '../../src/admin/http.ts';
import { CommitConfirmed } from '../../src/control/commit-confirmed.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const doc = (tag: string) => ({ ports: [{ name: 'a', socket: `/tmp/${tag}.sock` }] });
const tagOf = (d: Record<string, unknown>) => /\/tmp\/(\w+)\.sock/.exec((d.ports as { socket: string }[])[0].socket)![1];

/** `refused`: documents whose apply fails (as the supervisor refuses a config). */
function endpoint(applyMs: number, refused = new Set<string>()) {
  let current: Record<string, unknown> = doc('P0');
  let chain: Promise<unknown> = Promise.resolve();
  const saved: string[] = [];
  const refusals: string[] = [];
  const queue = <T>(job: () => Promise<T>): Promise<T> => {
    const run = chain.then(job);
    chain = run.catch(() => undefined);
    return run;
  };
  /** the documents applied, each with whether it was applied as a rollback (plugin files not read again) */
  const applied: [string, boolean][] = [];
  const applyNow = async (document: unknown, _source?: string, rollback = false) => {
    await sleep(applyMs);
    const tag = tagOf(document as Record<string, unknown>);
    applied.push([tag, rollback]);
    if (refused.has(tag)) throw new Error(`${tag} refused`);
    current = document as Record<string, unknown>;
    return { mode: 'live' as const, plugins: [], diff: [] };
  };
  const confirmed = new CommitConfirmed({ queue, applyNow, document: () => current, rollbackRefused: (m) => void refusals.push(m) });
  const backend = {
    document: () => current,
    apply: (document: unknown) => queue(() => applyNow(document)),
    commit: (document: unknown, seconds: number | null, source: string) => confirmed.commit(document, seconds, source),
    confirm: () => confirmed.confirm(),
    save: () => confirmed.save(() => (saved.push(tagOf(current)), '/etc/vrouter.json')),
  } as unknown as AdminBackend;
  const routes = adminRoutes(backend);
  const route = (method: string, path: string) => routes.find((r) => r.method === method && r.path === path)!;
  const call = async (method: string, path: string, query = '', body?: unknown) => route(method, path).handle({ method, params: {}, query: new URLSearchParams(query), body });
  /** A reload of the config file (SIGHUP): applied in its turn, it replaces what waits for a confirm. */
  const reload = (tag: string) => queue(async () => {
    const result = await applyNow(doc(tag));
    confirmed.replacedByFile();
    return result;
  });
  return { call, apply: backend.apply, reload, inForce: () => tagOf(current), saved, refusals, applied, settled: () => chain };
}

t.test('a rollback that comes due while another change is applied undoes it too, and that change says so', async (t) => {
  const e = endpoint(300);
  await e.call('PUT', '/config', 'confirm=1', doc('A')); // A in force at ~300 ms, its rollback due at ~1300
  await sleep(800);
  // B applies from ~1100 to ~1400: the rollback comes due meanwhile, and is applied after it.
  await t.rejects(e.call('PUT', '/config', 'confirm=1', doc('B')), new ApiError(409, 'VR_ROLLED_BACK', '', 'applied, then rolled back with the earlier change that was not confirmed in time: the config in force is the one before that change'));
  await t.rejects(e.call('POST', '/config/confirm'), { status: 409, code: 'VR_ROLLED_BACK', message: /too late/ }, 'too late to confirm A');
  await e.settled();
  t.equal(e.inForce(), 'P0', 'the config before A is in force');
  t.same(e.applied, [['A', false], ['B', false], ['P0', true]], 'the changes applied as changes, the rollback as a rollback: the plugin files in use stay');
  await t.rejects(e.call('POST', '/config/confirm'), { status: 404, code: 'VR_NOT_FOUND' }, 'nothing waits for a confirm');
  await sleep(1300);
  t.equal(e.inForce(), 'P0', 'and no later rollback (B\'s would have come by now) brings back A, which was never confirmed');
});

t.test('a change after a rollback came due, before it was applied, goes on top of it, and its own rollback goes back there', async (t) => {
  const e = endpoint(300);
  await e.call('PUT', '/config', 'confirm=1', doc('A')); // A in force at ~300 ms, its rollback due at ~1300, applied by ~1600
  await sleep(1100);
  const b = e.call('PUT', '/config', 'confirm=2', doc('B')); // sent at ~1400, applied after the rollback: ~1900
  await b;
  t.equal(e.inForce(), 'B', 'B is in force, on top of the rollback');
  await sleep(2400);
  await e.settled();
  t.equal(e.inForce(), 'P0', 'B, not confirmed, rolled back to P0, never to A');
});

t.test('the rollback goes back to the config in force when the change applied, changes queued before it included', async (t) => {
  const e = endpoint(200);
  const before = e.apply(doc('D1'), { source: 'an edit' }); // queued first: in force before the PUT's turn
  await e.call('PUT', '/config', 'confirm=1', doc('A'));
  await before;
  await sleep(1300);
  await e.settled();
  t.equal(e.inForce(), 'D1', 'back to D1, the config before A, not P0 (in force when the PUT was sent)');
});

t.test('a plain PUT keeps the change waiting for its confirm; a change waiting, or applying, is not saved', async (t) => {
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

  const slow = endpoint(300);
  const put = slow.call('PUT', '/config', 'confirm=1', doc('C'));
  await sleep(100);
  await t.rejects(slow.call('POST', '/config/save'), { status: 409, code: 'VR_UNCONFIRMED' }, 'a save sent while the change applies waits for it, and is refused');
  await put;
  t.same(slow.saved, [], 'nothing saved');
});

t.test('without a confirm the change before is back; with one it stays, even sent while it applies', async (t) => {
  const e = endpoint(10);
  await e.call('PUT', '/config', 'confirm=1', doc('A'));
  await sleep(1200);
  await e.settled();
  t.equal(e.inForce(), 'P0', 'rolled back');
  await e.call('PUT', '/config', 'confirm=1', doc('C'));
  await e.call('POST', '/config/confirm');
  await sleep(1200);
  t.equal(e.inForce(), 'C', 'confirmed: it stays');

  const slow = endpoint(300);
  const put = slow.call('PUT', '/config', 'confirm=1', doc('D'));
  await sleep(100);
  t.match(await slow.call('POST', '/config/confirm'), { json: { confirmed: true } }, 'a confirm sent while the change applies takes its turn after it');
  await put;
  await sleep(1300);
  t.equal(slow.inForce(), 'D', 'and keeps it');
});

t.test('a confirm sent while a second change applies confirms that one, not only the first', async (t) => {
  const e = endpoint(300);
  await e.call('PUT', '/config', 'confirm=1', doc('A'));
  const b = e.call('PUT', '/config', 'confirm=1', doc('B'));
  await sleep(50); // B applying
  await e.call('POST', '/config/confirm');
  await b;
  t.equal(e.inForce(), 'B');
  await sleep(1400);
  t.equal(e.inForce(), 'B', 'B stays: the confirm was for it too');
  await t.rejects(e.call('POST', '/config/confirm'), { status: 404, code: 'VR_NOT_FOUND' }, 'nothing waits any more');
});

t.test('a reload of the file that applies while the rollback comes due is not rolled back after it', async (t) => {
  const e = endpoint(300);
  await e.call('PUT', '/config', 'confirm=1', doc('A')); // A in force at ~300 ms, its rollback due at ~1300
  await sleep(800);
  await e.reload('F'); // applies from ~1100 to ~1400: the rollback comes due meanwhile
  await e.settled();
  t.equal(e.inForce(), 'F', 'the file stays in force: the rollback queued after it did nothing');
  await t.rejects(e.call('POST', '/config/confirm'), { status: 404, code: 'VR_NOT_FOUND' }, 'nothing waits');
});

t.test('a change queued after a reload that replaced a due rollback is not told it was rolled back', async (t) => {
  const e = endpoint(300);
  await e.call('PUT', '/config', 'confirm=1', doc('A')); // its rollback due at ~1300 ms
  await sleep(800);
  const reload = e.reload('F'); // ~1100 to ~1400: the rollback comes due meanwhile
  const c = e.call('PUT', '/config', 'confirm=5', doc('C')); // after it, ~1400 to ~1700
  await reload;
  t.match(await c, { json: { rollbackInSeconds: 5 } }, 'C applied, with its own rollback armed');
  await e.settled();
  t.equal(e.inForce(), 'C');
  await e.call('POST', '/config/confirm');
  await sleep(300);
  t.equal(e.inForce(), 'C', 'and kept once confirmed');
});

t.test('a confirm sent in time keeps the change waiting even if its deadline passes while another applies', async (t) => {
  const e = endpoint(300);
  await e.call('PUT', '/config', 'confirm=1', doc('A')); // its deadline at ~1300 ms
  await sleep(850);
  const b = e.call('PUT', '/config', 'confirm=5', doc('B')); // ~1150 to ~1450
  await sleep(50);
  const confirm = e.call('POST', '/config/confirm'); // ~1200: before A's deadline
  t.match(await b, { json: { rollbackInSeconds: 5 } }, 'B applied, not rolled back');
  await confirm;
  await sleep(300);
  t.equal(e.inForce(), 'B', 'A was confirmed in time, and B with it');
});

t.test('a rollback refused is reported, and the change stays in force', async (t) => {
  const e = endpoint(10, new Set(['P0']));
  await e.call('PUT', '/config', 'confirm=1', doc('A'));
  await sleep(1200);
  await e.settled();
  t.equal(e.inForce(), 'A', 'A stays');
  t.match(e.refusals, [/the rollback of a change not confirmed in time was refused, the change stays in force: P0 refused/], 'the refusal goes to the log');
  await t.rejects(e.call('POST', '/config/confirm'), { status: 404, code: 'VR_NOT_FOUND' }, 'nothing waits any more');
});
