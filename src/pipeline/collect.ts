// A full garbage collection on request. A recompile of the route tables leaves large
// SharedArrayBuffers (what the job returned, copied into shared memory since) and regions
// of shared memory only the garbage collector knows to be unreachable; V8 does not see the
// latter's size, and may take minutes to get to either. The supervisor asks for one after
// such a change, rather than let its memory grow with each change meanwhile.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

let timer: NodeJS.Timeout | null = null;

/** A collection `delayMs` from now (one for several asks meanwhile). */
export function collectGarbageSoon(delayMs = 1000): void {
  timer ??= setTimeout(() => {
    timer = null;
    gc();
  }, delayMs).unref();
}
