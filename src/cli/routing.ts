// Routes and neighbours: the tables in force, and static entries added and removed live.
import { showChange } from './changes.ts';
import { misuse, segment, show, type Command } from './command.ts';
import { table } from './format.ts';

interface RouteRow {
  prefix: string;
  type?: string;
  via?: string[];
  port?: string;
  metric?: number;
  address?: string;
}

interface NeighbourRow {
  address: string;
  mac?: string;
  interface?: string;
  port?: string;
  /** the port whose share of the table it counts in */
  owner?: string;
  state?: string;
  confirmedMsAgo?: number;
}

/** What a route does with a packet: the gateways, on-link, or drop. */
function nextHop(r: RouteRow): string {
  if (r.type === 'blackhole') return 'drop';
  if (r.via !== undefined && r.via.length > 0) return r.via.join(', ');
  return r.type === 'connected' ? `on-link (${r.address ?? 'connected'})` : 'on-link';
}

function routesTable(routes: RouteRow[]): string {
  if (routes.length === 0) return 'no routes';
  return table(['PREFIX', 'TYPE', 'METRIC', 'PORT', 'NEXT HOP'], routes.map((r) => [r.prefix, r.type ?? '-', r.metric ?? null, r.port ?? '-', nextHop(r)]));
}

function age(ms: number | undefined): string {
  if (ms === undefined) return '-';
  return ms < 1000 ? `${ms} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`;
}

function neighboursTable(rows: NeighbourRow[]): string {
  if (rows.length === 0) return 'no neighbours';
  return table(['ADDRESS', 'MAC', 'INTERFACE', 'PORT', 'OWNER', 'STATE', 'CONFIRMED'], rows.map((n) => [n.address, n.mac ?? '-', n.interface ?? '-', n.port ?? '-', n.owner ?? '-', n.state ?? '-', n.confirmedMsAgo === undefined ? '-' : `${age(n.confirmedMsAgo)} ago`]));
}

const routeAdd: Command = {
  words: ['route', 'add'], args: 'PREFIX [via GW]... [port P] [metric N] [--blackhole]', min: 1, max: 64, options: ['blackhole'],
  summary: 'adds a static route (several via: ECMP; --blackhole: drop)',
  run: async (ctx, [prefix, ...rest]) => {
    const via: string[] = [];
    let port: string | undefined;
    let metric: number | undefined;
    let blackhole = ctx.options.blackhole === true;
    for (let i = 0; i < rest.length; i++) {
      const word = rest[i];
      if (word === 'blackhole') {
        blackhole = true;
        continue;
      }
      const value = rest[i + 1];
      if (word !== 'via' && word !== 'port' && word !== 'metric') throw misuse(routeAdd, `unknown word ${JSON.stringify(word)}: expected via, port, metric or blackhole`);
      if (value === undefined) throw misuse(routeAdd, `${word} needs a value`);
      i++;
      if (word === 'via') via.push(value);
      else if (word === 'port') port = value;
      else {
        // The endpoint checks the range; a word that is no number at all is a typing slip.
        if (!/^-?\d+$/.test(value)) throw misuse(routeAdd, `metric must be a whole number, got ${JSON.stringify(value)}`);
        metric = Number(value);
      }
    }
    if (via.length === 0 && port === undefined && !blackhole) throw misuse(routeAdd, 'a route needs via GW, port P or --blackhole');
    // In the order the config file writes a route, which is how `config show` will show it.
    const body = {
      prefix,
      ...(via.length > 0 ? { via: via.length === 1 ? via[0] : via } : {}),
      ...(port !== undefined ? { port } : {}),
      ...(metric !== undefined ? { metric } : {}),
      ...(blackhole ? { blackhole } : {}),
    };
    showChange(ctx, await ctx.api.post('/routes', body));
  },
};

export const routingCommands: Command[] = [
  { words: ['routes'], summary: 'the routes in force: connected, static, blackhole', run: async (ctx) => show(ctx, await ctx.api.get('/routes'), routesTable) },
  routeAdd,
  {
    words: ['route', 'del'], args: 'PREFIX', min: 1, max: 1, summary: 'removes the static routes to PREFIX',
    run: async (ctx, [prefix]) => showChange(ctx, await ctx.api.delete(`/routes/${segment(prefix)}`)),
  },
  { words: ['neighbours'], summary: 'the neighbour table: address, MAC, port, owner (whose share it counts in), state', run: async (ctx) => show(ctx, await ctx.api.get('/neighbours'), neighboursTable) },
  {
    words: ['neighbour', 'add'], args: 'ADDRESS MAC PORT', min: 3, max: 3, summary: 'adds a static neighbour',
    run: async (ctx, [address, mac, port]) => showChange(ctx, await ctx.api.post('/neighbours', { address, mac, port })),
  },
  {
    words: ['neighbour', 'del'], args: 'ADDRESS', min: 1, max: 1, summary: 'removes a static neighbour',
    run: async (ctx, [address]) => showChange(ctx, await ctx.api.delete(`/neighbours/${segment(address)}`)),
  },
];
