// Imported first by the micro-benchmarks of data-plane code: this process then compiles it
// as the data-plane process does, with the same V8 flags (src/dataplane/jit-flags.ts), and
// loads it as the build writes it, numeric constants inlined (bench/lib/inline-constants-hook.ts).
// V8 reads the flags when it optimises a function, which happens once the code has run a
// while: after this module.
import { spawnSync } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';
import { DATAPLANE_V8_FLAGS } from '../../src/dataplane/jit-flags.ts';

// The hook has to be in place before the modules are loaded: without it, the same command
// again with it, and this process only waits for that one.
if (!(globalThis as { constantsInlined?: boolean }).constantsInlined) {
  const hook = new URL('../lib/inline-constants-hook.ts', import.meta.url).pathname;
  const again = spawnSync(process.execPath, ['--import', hook, '--disable-warning=ExperimentalWarning', ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(again.status ?? 1);
}
for (const flag of DATAPLANE_V8_FLAGS) setFlagsFromString(flag);
