// Imported first by the micro-benchmarks of data-plane code: this process then compiles it
// as the data-plane process does, with the same V8 flags (src/dataplane/jit-flags.ts). V8
// reads them when it optimises a function, which happens once the code has run a while:
// after this module.
import { setFlagsFromString } from 'node:v8';
import { DATAPLANE_V8_FLAGS } from '../../src/dataplane/jit-flags.ts';

for (const flag of DATAPLANE_V8_FLAGS) setFlagsFromString(flag);
