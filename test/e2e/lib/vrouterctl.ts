// vrouterctl, as an operator runs it against a vrouter started by a test: its exit status
// and everything it printed.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { daemonEnv, REPO, type StartedVrouter } from '../../support/vrouter-process.ts';

export const VROUTERCTL = join(REPO, 'dist/bin/vrouterctl.js');
const run = promisify(execFile);

export async function vrouterctl(vr: StartedVrouter, ...args: string[]): Promise<{ status: number; out: string }> {
  try {
    const r = await run(process.execPath, [VROUTERCTL, '--socket', join(vr.dir, 'admin.sock'), ...args], { encoding: 'utf8', env: daemonEnv() });
    return { status: 0, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}
