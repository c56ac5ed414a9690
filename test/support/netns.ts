// Network namespaces tests leave behind: a Linux mirror's is made by vrouter on demand, so
// the test that names it deletes it at the end, whether or not it came to exist.
import { execFileSync } from 'node:child_process';

/** Deletes network namespace `name` if there is one of that name. */
export function deleteNamespace(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch {
    // never made
  }
}
