// A plugin whose per-PMD state is never built: createState loops for good. Taken out, it
// lets traffic through (onError "bypass").
import { PLUGIN_API_VERSION, type Plugin } from '../../../src/pipeline/api.ts';

const plugin: Plugin<unknown, null> = {
  name: 'hangs-at-start',
  version: '0.0.1',
  apiVersion: PLUGIN_API_VERSION,
  onError: 'bypass',
  createState() {
    let spins = 0;
    for (;;) spins++;
  },
  process() {
    throw new Error('never called: the plugin never started');
  },
};

export default plugin;
