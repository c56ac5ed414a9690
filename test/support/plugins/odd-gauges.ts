// A plugin whose gauges are not all numbers: a number, Infinity, a string, and (with
// `throws` in its config) an exception. Forwards nothing itself.
import { PLUGIN_API_VERSION, type Plugin } from '../../../src/pipeline/api.ts';

interface Config {
  throws: boolean;
}

const plugin: Plugin<Config, null> = {
  name: 'odd-gauges',
  version: '0.0.1',
  apiVersion: PLUGIN_API_VERSION,
  parseConfig: (raw) => ({ throws: raw.throws === true }),
  gauges(view) {
    if (view.config.throws) throw new Error('no gauges today');
    return { items: 3, unbounded: Infinity, text: 'seven' as unknown as number };
  },
  createState: () => null,
  process() {},
};

export default plugin;
