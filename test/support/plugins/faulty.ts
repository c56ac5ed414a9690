// A plugin for the tests of plugin faults: throws on any batch holding a frame whose
// payload starts with 0xee, never returns from one holding a frame that starts with 0xdd
// (a loop), nor from one with 0xdc (a read that blocks for good: a thread terminated
// there does not end). Taken out, it lets traffic through: onError "bypass".
import { PLUGIN_API_VERSION, type PacketBatch, type Plugin } from '../../../src/pipeline/api.ts';
import { blockingEventfd, eventfdRead } from '../raw-fds.ts';

interface State {
  spins: number;
  counter: number;
  count: (port: number, counter: number, n: number) => void;
}

const plugin: Plugin<unknown, State> = {
  name: 'faulty',
  version: '0.0.1',
  apiVersion: PLUGIN_API_VERSION,
  dropReasons: [['never', 'a reason that is declared and never used']],
  counters: [['batches', 'batches seen']],
  onError: 'bypass',
  createState: (ctx) => ({ spins: 0, counter: ctx.counterId('batches'), count: ctx.count }),
  process(batch: PacketBatch, s: State) {
    s.count(batch.ingress, s.counter, 1);
    for (let i = 0; i < batch.count; i++) {
      const first = batch.data[batch.offset(i) + 14];
      if (first === 0xee) throw new Error('a frame starting with 0xee');
      if (first === 0xdd) for (;;) s.spins++;
      if (first === 0xdc) eventfdRead(blockingEventfd());
    }
  },
};

export default plugin;
