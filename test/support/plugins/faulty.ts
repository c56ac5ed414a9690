// A plugin for the tests of plugin faults: throws on any batch holding a frame whose
// payload starts with 0xee.
import { PLUGIN_API_VERSION, type PacketBatch, type Plugin } from '../../../src/pipeline/api.ts';

interface State {
  counter: number;
  count: (port: number, counter: number, n: number) => void;
}

const plugin: Plugin<unknown, State> = {
  name: 'faulty',
  version: '0.0.1',
  apiVersion: PLUGIN_API_VERSION,
  dropReasons: [['never', 'a reason that is declared and never used']],
  counters: [['batches', 'batches seen']],
  createState: (ctx) => ({ counter: ctx.counterId('batches'), count: ctx.count }),
  process(batch: PacketBatch, s: State) {
    s.count(batch.ingress, s.counter, 1);
    for (let i = 0; i < batch.count; i++) {
      if (batch.data[batch.offset(i) + 14] === 0xee) throw new Error('a frame starting with 0xee');
    }
  },
};

export default plugin;
