// What a change did, as the endpoint answers it (mode, plugins, diff, dryRun,
// rollbackInSeconds): the diff as + / - / ~ lines per config key, then one line on how it
// was (or would be) applied.
import type { ApplyResult } from '../control/supervisor.ts';
import type { Answer } from './client.ts';
import { show, type Context } from './command.ts';

/** The endpoint's answer to a change (ApplyResultBody of src/admin/schemas.ts). */
export interface ApplyAnswer extends ApplyResult {
  dryRun: boolean;
  rollbackInSeconds?: number;
}

const shown = (v: unknown) => (v === undefined ? '(absent)' : JSON.stringify(v));

/** The diff, one line per entry added (+) or removed (-) and per value changed (~). */
export function diffLines(diff: ApplyAnswer['diff']): string[] {
  const rows: [string, string, string][] = [];
  for (const change of diff) {
    if (change.added !== undefined || change.removed !== undefined) {
      for (const e of change.removed ?? []) rows.push(['-', change.key, shown(e)]);
      for (const e of change.added ?? []) rows.push(['+', change.key, shown(e)]);
    } else {
      rows.push(['~', change.key, `${shown(change.before)} -> ${shown(change.after)}`]);
    }
  }
  const width = rows.reduce((w, [, key]) => Math.max(w, key.length), 0);
  return rows.map(([sign, key, text]) => `${sign} ${key.padEnd(width)}  ${text}`);
}

/** How the change went, in a line: "applied live (routing switched tables)". */
export function outcome(result: ApplyAnswer): string {
  const plugins = result.plugins.length > 0 ? result.plugins.join(', ') : 'none';
  if (result.mode === 'none') return result.dryRun ? 'dry run: nothing would change' : 'nothing changed: the router already runs this';
  const how = result.mode === 'live' ? `live (plugins taking new tables: ${plugins})` : `by restarting the PMDs on new plugin versions (${plugins})`;
  if (result.dryRun) return `dry run: it would apply ${how}; nothing changed`;
  const rollback = result.rollbackInSeconds !== undefined ? `\nrolls back in ${result.rollbackInSeconds} s unless confirmed: vrouterctl config confirm` : '';
  return `applied ${how}${rollback}`;
}

export function describeChange(result: ApplyAnswer): string {
  return [...diffLines(result.diff), outcome(result)].join('\n');
}

/** Prints the answer to a change: the diff and how it was applied, or the JSON. */
export function showChange(ctx: Context, answer: Answer): void {
  show(ctx, answer, (r: ApplyAnswer) => describeChange(r));
}
