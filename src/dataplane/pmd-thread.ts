// Entry point of a PMD worker thread: pins itself, then polls forever. Commands arrive on
// a MessagePort that it drains only when the doorbell word changes (one Atomics.load per
// round); when idle it sleeps on that word in growing steps, so a command wakes it at once.
import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { pack, unpack } from 'msgpackr';
import { pinThreadToCpu, setThreadName } from '../sys/libc.ts';
import { createLog } from '../log.ts';
import { DOORBELL_COMMANDS, type PmdRequest } from '../vhost/dataplane-link.ts';
import { Pmd, type PmdConfig, type PmdShared } from './pmd.ts';

export interface PmdThreadData {
  config: PmdConfig;
  shared: PmdShared;
  doorbell: SharedArrayBuffer;
  commands: MessagePort;
}

const { config, shared, doorbell: doorbellBuffer, commands } = workerData as PmdThreadData;
const log = createLog(`pmd${config.id}`);
try {
  setThreadName(`pmd${config.id}`);
  pinThreadToCpu(config.cpu);
} catch (err) {
  log.error(`cannot pin to CPU ${config.cpu}: ${(err as Error).message}`);
}
const pmd = new Pmd(config, shared, log);
const doorbell = new Int32Array(doorbellBuffer);
log.info(`polling on CPU ${config.cpu}, ${config.ports.length} port(s)`);

function drainCommands(): void {
  for (let m = receiveMessageOnPort(commands); m !== undefined; m = receiveMessageOnPort(commands)) {
    const req = unpack(m.message as Uint8Array) as PmdRequest;
    let reply;
    try {
      reply = { id: req.id, ...pmd.execute(req.cmd) };
    } catch (err) {
      reply = { id: req.id, error: (err as Error).message };
    }
    commands.postMessage(pack(reply));
  }
}

// The doorbell starts at 0: commands posted while this thread was starting are seen.
let seen = 0;
let idleRounds = 0;
let sleepUs = 0;
for (;;) {
  const ring = Atomics.load(doorbell, DOORBELL_COMMANDS);
  if (ring !== seen) {
    seen = ring;
    drainCommands();
  }
  if (pmd.pollOnce() > 0) {
    idleRounds = 0;
    sleepUs = 0;
  } else if (config.idleSleepMaxUs > 0 && ++idleRounds > config.idleSpinRounds) {
    sleepUs = Math.min(config.idleSleepMaxUs, sleepUs === 0 ? 1 : sleepUs * 2);
    Atomics.wait(doorbell, DOORBELL_COMMANDS, seen, sleepUs / 1000);
  }
}
