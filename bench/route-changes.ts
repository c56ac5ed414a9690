// node bench/route-changes.ts [--routes N] [--sequential N] [--concurrent N] [--bin FILE]: route changes
// a second through the admin endpoint of a running vrouter (dist/, as `npm run build`
// makes it) with N routes in its config: changes one at a time, each answer awaited
// (POST /routes, then DELETE /routes/PREFIX of the same), and changes issued at a 1 ms
// pace without waiting for the answers (adds and deletes mixed), with the CPU vrouter used
// meanwhile and the number of compiles its log shows. --bin FILE runs another build of the
// daemon (an older revision's dist/bin/vrouter.js, for a before).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { startVrouter, VROUTER_BIN } from '../test/support/vrouter-process.ts';

const { values } = parseArgs({ options: { routes: { type: 'string' }, sequential: { type: 'string' }, concurrent: { type: 'string' }, bin: { type: 'string' } } });
const ROUTES = Number(values.routes ?? 0);
const SEQUENTIAL = Number(values.sequential ?? 100);
const CONCURRENT = Number(values.concurrent ?? 1000);

/** Routes of the config (host routes in 172.16.0.0/12), and those the concurrent deletes take. */
const filler = Array.from({ length: ROUTES }, (_, k) => ({ prefix: `172.${16 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}/32`, via: '10.0.2.3' }));
const doomed = (k: number) => `10.251.${(k >> 8) & 255}.${k & 255}/32`;
const added = (k: number) => `10.250.${(k >> 8) & 255}.${k & 255}/32`;
const vr = await startVrouter(
  {
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'] },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'] },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing'],
    routes: [...filler, ...Array.from({ length: CONCURRENT / 2 }, (_, k) => ({ prefix: doomed(k), via: '10.0.2.3' }))],
  },
  60000,
  undefined,
  values.bin ?? VROUTER_BIN,
);
const dispatcher = new Agent({ connect: { socketPath: join(vr.dir, 'admin.sock') }, connections: 64 });
const call = async (method: 'POST' | 'DELETE', path: string, body?: unknown) => {
  const res = await request(`http://vrouter${path}`, { method, dispatcher, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${method} ${path}: ${res.statusCode} ${text}`);
};
/** CPU seconds vrouter used so far, all its threads. */
const cpu = () => {
  const fields = readFileSync(`/proc/${vr.proc.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
};
const compiles = () => (vr.stderr().match(/routing: \d+ routes compiled/g) ?? []).length;
const report = (what: string, changes: number, seconds: number, cpuSeconds: number, extra = '') =>
  console.log(`${ROUTES} routes, ${what}: ${changes} changes in ${seconds.toFixed(2)} s, ${(changes / seconds).toFixed(0)} a second; vrouter used ${((100 * cpuSeconds) / seconds).toFixed(0)} % of a core${extra}`);

try {
  let cpu0 = cpu();
  let started = performance.now();
  for (let k = 0; k < SEQUENTIAL; k++) await call('POST', '/routes', { prefix: added(k), via: '10.0.2.3' });
  for (let k = 0; k < SEQUENTIAL; k++) await call('DELETE', `/routes/${encodeURIComponent(added(k))}`);
  report('one at a time', 2 * SEQUENTIAL, (performance.now() - started) / 1000, cpu() - cpu0);

  const compiled = compiles();
  cpu0 = cpu();
  started = performance.now();
  const answers: Promise<void>[] = [];
  for (let k = 0; k < CONCURRENT; k++) {
    const n = k >> 1;
    answers.push(k % 2 === 0 ? call('POST', '/routes', { prefix: added(SEQUENTIAL + n), via: '10.0.2.3' }) : call('DELETE', `/routes/${encodeURIComponent(doomed(n))}`));
    await sleep(1);
  }
  const issued = (performance.now() - started) / 1000;
  await Promise.all(answers);
  report('issued at a 1 ms pace', CONCURRENT, (performance.now() - started) / 1000, cpu() - cpu0, ` (issued over ${issued.toFixed(2)} s; ${compiles() - compiled} compiles)`);
} finally {
  await dispatcher.close();
  await vr.stop();
}
