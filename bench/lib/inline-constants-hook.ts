// `node --import ./bench/lib/inline-constants-hook.ts ...`: the sources of src/ and plugins/
// are loaded with their numeric constants written as values, as the build writes dist/
// (scripts/inline-constants.ts), so that the micro-benchmarks, which run the sources on
// this thread, time the code the data plane runs.
import { readFileSync, readdirSync } from 'node:fs';
import { registerHooks, stripTypeScriptTypes } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { inlineConstants } from '../../scripts/inline-constants.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(join(REPO, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts'))
    .map((e) => join(e.parentPath, e.name));
}

const files = new Map([...sources('src'), ...sources('plugins')].map((path) => [path, stripTypeScriptTypes(readFileSync(path, 'utf8'))]));
const inlined = new Map([...inlineConstants(files)].map(([path, out]) => [pathToFileURL(path).href, out.text]));

registerHooks({
  load(url, context, nextLoad) {
    const text = inlined.get(url);
    return text === undefined ? nextLoad(url, context) : { format: 'module', source: text, shortCircuit: true };
  },
});

/** Set once the hook is in place: the benchmark checks it. */
(globalThis as { constantsInlined?: boolean }).constantsInlined = true;
