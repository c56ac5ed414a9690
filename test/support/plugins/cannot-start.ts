// A plugin whose per-PMD state cannot be built: createState throws. Taken out, it lets
// traffic through (onError "bypass").
import { PLUGIN_API_VERSION, type Plugin } from '../../../src/pipeline/api.ts';

const plugin: Plugin<unknown, null> = {
  name: 'cannot-start',
  version: '0.0.1',
  apiVersion: PLUGIN_API_VERSION,
  onError: 'bypass',
  createState() {
    throw new Error('no state for this PMD');
  },
  process() {
    throw new Error('never called: the plugin never started');
  },
};

export default plugin;
