// ACL rules with their hits, replacing them from a file, and the policers with their colour
// counters.
import { showChange } from './changes.ts';
import { misuse, show, type Command } from './command.ts';
import { readJsonFile } from './files.ts';
import { inline, table } from './format.ts';

interface RuleRow {
  index: number | 'default';
  action: string;
  hits?: number;
  [key: string]: unknown;
}

interface PolicerRow {
  name: string;
  type?: string;
  cir?: unknown;
  pir?: unknown;
  apply?: Record<string, unknown>[];
  counters?: Record<string, { packets: number; bytes: number } | number>;
  [key: string]: unknown;
}

/** The match of a rule: its keys other than the action, as key=value. */
function matchOf(rule: RuleRow): string {
  const keys = Object.entries(rule).filter(([k]) => k !== 'index' && k !== 'action' && k !== 'hits');
  return keys.length === 0 ? (rule.index === 'default' ? '(no rule matched)' : 'any') : keys.map(([k, v]) => `${k}=${inline(v)}`).join(' ');
}

function rulesTable(rules: RuleRow[]): string {
  return table(['#', 'ACTION', 'HITS', 'MATCH'], rules.map((r) => [r.index === 'default' ? 'default' : String(r.index), r.action, r.hits ?? null, matchOf(r)]));
}

const packets = (p: PolicerRow, colour: string) => {
  const c = p.counters?.[colour];
  return typeof c === 'object' && c !== null ? c.packets : null;
};

function policersTable(policers: PolicerRow[]): string {
  if (policers.length === 0) return 'no policers';
  return table(
    ['POLICER', 'TYPE', 'CIR', 'PIR', 'GREEN', 'YELLOW', 'RED', 'APPLIED TO'],
    policers.map((p) => [
      p.name, p.type ?? 'srTCM', inline(p.cir), inline(p.pir), packets(p, 'green'), packets(p, 'yellow'), packets(p, 'red'),
      (p.apply ?? []).map((a) => Object.entries(a).map(([k, v]) => `${k}=${inline(v)}`).join(',')).join(' ') || '-',
    ]),
  );
}

const aclSet: Command = {
  words: ['acl', 'set'], args: 'FILE', min: 1, max: 1,
  summary: 'replaces the rules: FILE holds [rules] or {"rules", "default"}',
  run: async (ctx, [file]) => {
    const doc = readJsonFile(file, aclSet);
    const body = Array.isArray(doc) ? { rules: doc } : doc;
    if (typeof body !== 'object' || body === null || !Array.isArray((body as { rules?: unknown }).rules)) {
      throw misuse(aclSet, `${file} must hold a JSON array of rules or an object {"rules": [...], "default": ...}`);
    }
    showChange(ctx, await ctx.api.put('/acl', body));
  },
};

export const aclCommands: Command[] = [
  { words: ['acl'], summary: 'the ACL rules in order, with their hits', run: async (ctx) => show(ctx, await ctx.api.get('/acl'), rulesTable) },
  aclSet,
  { words: ['policers'], summary: 'the policers, with packets per colour', run: async (ctx) => show(ctx, await ctx.api.get('/policers'), policersTable) },
];
