// Another revision of vrouter, built beside this tree (bench --against REV): a detached git
// worktree under the system's temporary directory, sharing this tree's node_modules, built
// by its own `npm run build` (tsc alone would leave out what the build does after it, such
// as writing constants into the code that reads them: a slower data plane than the
// revision's own). Its figures then sit beside this tree's in one run.
import { execFileSync } from 'node:child_process';
import { existsSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { REPO } from '../../test/support/vrouter-process.ts';

/** Builds `rev` (a commit, tag or branch); returns its name and its daemon's entry. */
export function buildRevision(rev: string): { name: string; bin: string } {
  const commit = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', `${rev}^{commit}`], { encoding: 'utf8' }).trim();
  const dir = join(tmpdir(), `vrouter-${commit}`);
  if (!existsSync(dir)) execFileSync('git', ['-C', REPO, 'worktree', 'add', '--detach', dir, commit], { stdio: 'ignore' });
  if (!existsSync(join(dir, 'node_modules'))) symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));
  const path = `${join(REPO, 'node_modules/.bin')}:${dirname(process.execPath)}:${process.env.PATH ?? ''}`;
  execFileSync('npm', ['run', 'build'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, PATH: path } });
  return { name: commit, bin: join(dir, 'dist/bin/vrouter.js') };
}
