// A plugin for the tests of plugin faults: throws on any batch holding a frame whose
// payload starts with 0xee, never returns from one holding a frame that starts with 0xdd
// (a loop), nor from one with 0xdc (a read that blocks for good: a thread terminated
// there does not end); sends a frame starting with 0xde to port 40 (no port of a test's
// vrouter), and one starting with 0xdb to a drop code of no plugin; after a frame starting
// with 0xda, never returns from its next betweenBursts; floods one starting with 0xd9. Its config: `failTables` (a new
// config with it set makes tablesChanged throw). Taken out, it lets traffic through:
// onError "bypass".
import { EGRESS_FLOOD, PLUGIN_API_VERSION, type PacketBatch, type Plugin } from '../../../src/pipeline/api.ts';
import { EGRESS_DROP } from '../../../src/dataplane/egress-codes.ts';
import { blockingEventfd, eventfdRead } from '../raw-fds.ts';

interface Config {
  failTables: boolean;
}

interface State {
  spins: number;
  counter: number;
  count: (port: number, counter: number, n: number) => void;
  hangBetweenBursts: boolean;
}

/** A port no test's vrouter has, and a drop code past every plugin's. */
export const NO_SUCH_PORT = 40;
const NO_SUCH_DROP = EGRESS_DROP - 500;

const plugin: Plugin<Config, State> = {
  name: 'faulty',
  version: '0.0.1',
  apiVersion: PLUGIN_API_VERSION,
  dropReasons: [['never', 'a reason that is declared and never used']],
  counters: [['batches', 'batches seen']],
  onError: 'bypass',
  parseConfig(raw) {
    const { failTables = false, ...rest } = raw as { failTables?: unknown };
    const unknown = Object.keys(rest)[0];
    if (unknown !== undefined) throw Object.assign(new Error('unknown key'), { field: unknown });
    if (typeof failTables !== 'boolean') throw Object.assign(new Error('must be true or false'), { field: 'failTables' });
    return { failTables };
  },
  createState: (ctx) => ({ spins: 0, counter: ctx.counterId('batches'), count: ctx.count, hangBetweenBursts: false }),
  process(batch: PacketBatch, s: State) {
    s.count(batch.ingress, s.counter, 1);
    for (let i = 0; i < batch.count; i++) {
      const first = batch.data[batch.offset(i) + 14];
      if (first === 0xee) throw new Error('a frame starting with 0xee');
      if (first === 0xdd) for (;;) s.spins++;
      if (first === 0xdc) eventfdRead(blockingEventfd());
      if (first === 0xde) batch.egress[i] = NO_SUCH_PORT;
      if (first === 0xdb) batch.egress[i] = NO_SUCH_DROP;
      if (first === 0xda) s.hangBetweenBursts = true;
      if (first === 0xd9) batch.egress[i] = EGRESS_FLOOD;
    }
  },
  betweenBursts(s: State) {
    if (s.hangBetweenBursts) for (;;) s.spins++;
  },
  tablesChanged(_s: State, update) {
    if (update.config.failTables) throw new Error('cannot take these tables');
  },
};

export default plugin;
