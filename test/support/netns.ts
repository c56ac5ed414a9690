// Network namespaces of tests: a Linux mirror's is made by vrouter on demand, so the test
// that names it deletes it at the end, whether or not it came to exist; and the host stack
// behind an uplink port, reached through one end of a veth whose other end is vrouter's
// interface, gone at the test's end.
import { execFileSync } from 'node:child_process';
import type { Test } from 'tap';

/** Deletes network namespace `name` if there is one of that name. */
export function deleteNamespace(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch {
    // never made
  }
}

/** `ip` with these arguments: its output. Throws on failure, with ip's message. */
export const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/**
 * Namespace `netns` and a veth pair: `iface` in this namespace, `peer` in `netns`; deleted
 * at the test's end (the pair with the namespace, or before: a test may delete it itself).
 */
export function vethIntoNamespace(t: Test, netns: string, iface: string, peer: string): void {
  ip('netns', 'add', netns);
  t.teardown(() => ip('netns', 'del', netns));
  ip('link', 'add', iface, 'type', 'veth', 'peer', 'name', peer, 'netns', netns);
  t.teardown(() => {
    try {
      ip('link', 'del', iface);
    } catch {
      // gone with the namespace, or deleted by the test
    }
  });
}
