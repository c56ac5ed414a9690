// A plugin that takes learned routes: its routesLearned throws the first time it is called
// and then notes what it is handed; its gauges say how often it was called, and the size of
// the last set of prefixes and whether it was whole.
import { PLUGIN_API_VERSION, type ChangedPrefixes, type Plugin } from '../../../src/pipeline/api.ts';

let calls = 0;
let lastSize = -1;
let lastWhole = 0;

const plugin: Plugin<unknown, null> = {
  name: 'flaky-learner',
  version: '0.0.1',
  apiVersion: PLUGIN_API_VERSION,
  routesLearned(_setup, prefixes: ChangedPrefixes) {
    calls++;
    if (calls === 1) throw new Error('not this time');
    lastSize = prefixes.size;
    lastWhole = prefixes.whole === true ? 1 : 0;
  },
  gauges: () => ({ calls, last_size: lastSize, last_whole: lastWhole }),
  createState: () => null,
  process() {},
  tablesChanged() {},
};

export default plugin;
