// What a reload (SIGHUP, the admin endpoint) may change while vrouter runs: the plugins'
// configs (routes, neighbours, rules, policers), the plugin files, the ports and bridges
// (port-change.ts). The PMDs' CPUs, the pipeline's shape and the admin endpoint need a
// restart.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { VrouterConfig } from './config.ts';

/** The first part of the config that differs in a way a reload cannot apply, or null. */
export function structuralChange(running: VrouterConfig, next: VrouterConfig): string | null {
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  if (!same(running.pmd, next.pmd)) return 'pmd';
  if (!same(running.pipeline, next.pipeline)) return 'pipeline';
  if (!same(running.admin, next.admin)) return 'admin';
  const paths = (c: VrouterConfig) => c.plugins.map((p) => [p.name, p.path]);
  if (!same(paths(running), paths(next))) return 'plugins (their paths)';
  return null;
}

/** A digest of a plugin's entry file: a reload restarts the PMDs only when one changed. */
export function fileDigest(path: string): string {
  try {
    return createHash('sha256').update(readFileSync(path)).digest('hex');
  } catch {
    return 'unreadable';
  }
}

/** Whether two plugin configs (as parseConfig returned them) are the same. */
export function sameConfig(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
