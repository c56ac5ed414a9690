// The admin endpoint's HTTP layer (src/admin/http.ts) on a failure that is not the request's:
// the client gets a 500 with code VR_INTERNAL, the endpoint goes on answering, and the log
// has the stack, so that the operator can report it (repeats limited by the log).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Agent, request } from 'undici';
import { AdminHttp, ApiError } from '../../src/admin/http.ts';
import { ADMIN_TIMEOUTS } from '../../src/control/config.ts';
import { createLog } from '../../src/log.ts';

t.test('an internal error is a 500 for the client and a stack in the log', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-admin-errors-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const lines: string[] = [];
  const log = createLog('admin', (line) => void lines.push(line));
  const path = join(dir, 'admin.sock');
  const http = new AdminHttp({ listen: { kind: 'unix', path }, tokenFile: null, headersTimeoutMs: ADMIN_TIMEOUTS.headersMs, stalledAnswerMs: ADMIN_TIMEOUTS.stalledAnswerMs }, [
    { method: 'GET', path: '/broken', handle: () => (null as unknown as { x: { y: number } }).x.y as never },
    { method: 'GET', path: '/refused', handle: () => { throw new ApiError(400, 'VR_INVALID', 'what', 'not like that'); } },
    { method: 'GET', path: '/fine', handle: () => ({ json: { ok: true } }) },
  ], log);
  await http.listen();
  t.teardown(() => http.close());
  const dispatcher = new Agent({ connect: { socketPath: path } });
  t.teardown(() => dispatcher.close());
  const get = async (what: string) => {
    const res = await request(`http://vrouter${what}`, { dispatcher });
    return { status: res.statusCode, json: (await res.body.json()) as { error?: { code: string; field: string; message: string } } };
  };

  const broken = await get('/broken');
  t.equal(broken.status, 500, 'a handler that throws a TypeError: 500');
  t.match(broken.json.error, { code: 'VR_INTERNAL', field: '' }, 'code VR_INTERNAL');
  t.match(broken.json.error?.message, /null/, "the error's message, for the client");
  const logged = lines.filter((l) => l.includes('admin: GET /broken failed'));
  t.equal(logged.length, 1, 'one line in the log', { lines });
  t.match(logged[0], /TypeError[^\n]*\n\s+at /, 'with the stack');

  const refused = await get('/refused');
  t.match(refused, { status: 400, json: { error: { code: 'VR_INVALID', field: 'what' } } }, "a refusal is the request's fault: 400");
  t.notOk(lines.some((l) => l.includes('/refused')), 'and not logged as a failure');
  t.match(await get('/fine'), { status: 200, json: { ok: true } }, 'the endpoint answers on');
});
