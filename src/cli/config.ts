// The config as a whole: showing the one in force, the diff a file would make, applying it
// (with a dry run, or commit-confirmed: rolled back unless confirmed in time), saving it to
// the daemon's config file, and reloading that file.
import { describeChange, diffLines, outcome, showChange, type ApplyAnswer } from './changes.ts';
import { misuse, show, type Command } from './command.ts';
import { readJsonFile } from './files.ts';
import { describePause, type UpgradeResult } from '../control/upgrade-pause.ts';

function configDocument(path: string, command: Command): unknown {
  const doc = readJsonFile(path, command);
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw misuse(command, `${path} must hold a config document: a JSON object`);
  return doc;
}

const configDiff: Command = {
  words: ['config', 'diff'], args: 'FILE', min: 1, max: 1,
  summary: 'what applying FILE would change (changes nothing)',
  run: async (ctx, [file]) => {
    const answer = await ctx.api.put('/config?dryRun=1', configDocument(file, configDiff));
    show(ctx, answer, (r: ApplyAnswer) => (r.diff.length === 0 ? `no difference: ${file} is the config in force` : [...diffLines(r.diff), outcome(r)].join('\n')));
  },
};

const configApply: Command = {
  words: ['config', 'apply'], args: 'FILE [--dry-run] [--confirm SECONDS]', min: 1, max: 1, options: ['dry-run', 'confirm'],
  summary: 'applies FILE live; --confirm: rolled back unless confirmed in time',
  run: async (ctx, [file]) => {
    const doc = configDocument(file, configApply);
    if (ctx.options['dry-run'] && ctx.options.confirm !== undefined) throw misuse(configApply, 'give --dry-run or --confirm, not both');
    const query = ctx.options['dry-run'] ? '?dryRun=1' : ctx.options.confirm !== undefined ? `?confirm=${encodeURIComponent(ctx.options.confirm)}` : '';
    showChange(ctx, await ctx.api.put(`/config${query}`, doc));
  },
};

export const configCommands: Command[] = [
  { words: ['config', 'show'], summary: 'the config document in force, as JSON', run: async (ctx) => show(ctx, await ctx.api.get('/config'), (doc) => JSON.stringify(doc, null, 2)) },
  configDiff,
  configApply,
  {
    words: ['config', 'confirm'], summary: 'keeps the change of `config apply --confirm`',
    run: async (ctx) => show(ctx, await ctx.api.post('/config/confirm'), () => 'confirmed: the change stays'),
  },
  {
    words: ['config', 'save'], summary: 'writes the config in force to the daemon\'s config file',
    run: async (ctx) => show(ctx, await ctx.api.post('/config/save'), (r: { saved: string }) => `saved to ${r.saved}`),
  },
  {
    words: ['upgrade'], summary: 'replaces the data-plane process by one from the code on disk; guests stay connected',
    run: async (ctx) =>
      show(ctx, await ctx.api.post('/dataplane/upgrade'), (r: UpgradeResult) => `data plane upgraded: pid ${r.previousPid} -> ${r.pid}; forwarding paused ${r.pauseMs} ms (${describePause(r.pauseSteps)}; ${r.totalMs} ms in all)`),
  },
  {
    words: ['reload'], summary: 'reads the config and plugin files again and applies them (SIGHUP)',
    run: async (ctx) => show(ctx, await ctx.api.post('/reload'), (r: ApplyAnswer) => describeChange(r)),
  },
];
