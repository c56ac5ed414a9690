// The admin endpoint's resources: what an operator reads (ports, PMDs, counters, plugins and
// their tables, the config, metrics) and changes (routes, neighbours, ACL rules, the whole
// config with a dry run and a confirm-or-roll-back timer). Every change is a new config
// document applied as a whole by the supervisor: checked by the same code as the file,
// refused with the field at fault, or applied live.
import type { TSchema } from '../control/typebox.ts';
import type { ApplyResult } from '../control/supervisor.ts';
import { ConfirmError } from '../control/commit-confirmed.ts';
import type { UpgradeResult } from '../control/upgrade-pause.ts';
import type { PortStats } from '../dataplane/counters.ts';
import { PLUGIN_TOP_LEVEL_KEYS } from '../control/config-schema.ts';
import { CAPTURE_QUERY, CaptureHub, type CaptureSource } from './capture.ts';
import { ApiError, jsonRows, type Reply, type Request, type Route } from './http.ts';
import { renderMetrics } from './metrics.ts';
import { canonicalPrefix, hasRouteTo, routeDraft } from './route-edits.ts';
import { openApiDocument } from './openapi.ts';
import { AclBody, ApplyResultBody, checkBody, ConfigBody, NeighbourBody, PortBody, QueueMoveBody, RouteBatchBody, RouteBody } from './schemas.ts';
import { configDiff, type ConfigChange } from '../control/config-diff.ts';

/** What the endpoint needs of the running router (the supervisor). */
export interface AdminBackend {
  /** the config document in force, as written */
  document(): Record<string, unknown>;
  apply(document: unknown, options: { dryRun?: boolean; source: string }): Promise<ApplyResult>;
  /** PUT /config: applies a whole document in its turn, rolled back unless confirmed within `seconds` (commit-confirmed.ts); throws ConfirmError VR_ROLLED_BACK */
  commit(document: unknown, seconds: number | null, source: string): Promise<ApplyResult & { rollbackInSeconds?: number }>;
  /** keeps the change waiting for its confirm; throws ConfirmError VR_NOT_FOUND or VR_ROLLED_BACK */
  confirm(): Promise<void>;
  /**
   * applies an edit of the document in force, made when its turn comes (concurrent changes
   * all land): on a shallow copy, so the edit replaces what it changes, never changing an
   * object of the document in place
   */
  applyEdit(edit: (document: Record<string, unknown>) => void, source: string, changes?: () => ConfigChange[]): Promise<ApplyResult>;
  /** writes the document in force to the config file, after the changes queued before; returns its path; throws ConfirmError VR_UNCONFIRMED while a change waits for its confirm */
  save(): Promise<string>;
  /** reads the config file and plugin files again and applies them */
  reload(): Promise<ApplyResult>;
  stats(): { ports: Record<string, PortStats>; pmds: { cpu: number; rx_packets: number; tx_packets: number; busy_ms?: number; busy_rounds?: number; ns_per_packet?: number | null; queues?: { port: string; queue: number }[] }[] };
  ports(): { name: string; [key: string]: unknown }[];
  /** each port's connection, in the order of ports(), or null when it cannot be had */
  portStates(): Promise<unknown[] | null>;
  pipeline(): string[];
  plugins(): { name: string; version: string; path: string; tables: string[] }[];
  /** a plugin's table (Plugin.tables), the entries the query asks for, or null when it has none of that name */
  table(plugin: string, table: string, query?: Readonly<Record<string, string>>): Promise<Iterable<Record<string, unknown> | null> | null>;
  /** every plugin's gauges (Plugin.gauges) */
  gauges(): Promise<{ plugin: string; name: string; value: number }[]>;
  /** packet capture's shared memory, and the names its records need */
  capture(): CaptureSource;
  /** the data-plane process: pid, deaths, upgrades */
  dataplane(): { pid: number | null; sparePid: number | null; deaths: number; upgrades: number; lastDeath: { at: string; how: string; restartMs: number | null } | null; lastUpgrade: (UpgradeResult & { at: string }) | null };
  /** replaces the data-plane process by one started from the code on disk */
  upgrade(): Promise<UpgradeResult>;
  /** each route source ("routeSources", mirrors' namespaces): state, routes, routes left out by why */
  routeSources(): { source: string; state: string; routes: number; leftOut: Record<string, number> }[];
}

/** A route of the endpoint, described for the OpenAPI document. */
export interface ApiRoute extends Route {
  summary: string;
  body?: TSchema;
  /** query parameters: name -> meaning */
  query?: Record<string, string>;
  /** what a 200 holds (a schema), when it is not plain JSON of the resource */
  response?: TSchema;
  /** the content type of a 200, when not JSON */
  produces?: string;
}

/** What GET /routes takes (the routing stage's routes table reads it). */
const ROUTES_QUERY = {
  prefix: 'only the routes to this prefix (192.0.2.0/24)',
  lookup: 'only the routes to the longest prefix in the forwarding table that holds this address',
  type: 'only the routes of this type: connected, static, blackhole, netlink, fpm',
  limit: 'at most this many routes',
  offset: 'after this many',
};

/** Commit-confirmed's refusals: a change undone by a rollback, or one that is not there to confirm. */
const CONFIRM_STATUS = { VR_ROLLED_BACK: 409, VR_UNCONFIRMED: 409, VR_NOT_FOUND: 404 } as const;

function confirmRefusal(err: unknown): unknown {
  return err instanceof ConfirmError ? new ApiError(CONFIRM_STATUS[err.code], err.code, '', err.message) : err;
}

export function adminRoutes(backend: AdminBackend): ApiRoute[] {
  /** `field`: the path parameter that names the stage, when the request names it. */
  const needPlugin = (name: string, field = '') => {
    if (!backend.pipeline().includes(name)) throw new ApiError(404, 'VR_NOT_FOUND', field, `the pipeline has no ${name} stage`);
  };
  /** A table, as a list written out as it is read (a route table may hold a million entries). `named`: the request names plugin and table in its path. */
  const table = async (plugin: string, name: string, query: URLSearchParams, named = false): Promise<Reply> => {
    needPlugin(plugin, named ? 'name' : '');
    try {
      const rows = await backend.table(plugin, name, Object.fromEntries(query));
      if (rows === null) throw new ApiError(404, 'VR_NOT_FOUND', named ? 'table' : '', `plugin ${plugin} has no table ${name}`);
      return jsonRows(rows);
    } catch (err) {
      // A bad query parameter (PluginConfigError names it).
      const e = err as Error & { field?: string; code?: string };
      if (e.code === 'VR_PLUGIN_CONFIG') throw new ApiError(400, 'VR_INVALID', e.field ?? '', e.message.replace(`${e.field}: `, ''));
      throw err;
    }
  };
  /**
   * Applies an edit of the document in force; an error about the entry the edit appended
   * (`key`: the list it went into) names the request body's field.
   */
  const change = async (edit: (doc: Record<string, unknown>) => void, source: string, appended?: string, own?: () => ConfigChange[]): Promise<Reply> => {
    let index = -1;
    // Without `own`, what this edit changed is its document before and after it (the keys it
    // replaced; the others are the same objects, passed over at once).
    let diff: ConfigChange[] = [];
    const changes = own ?? (() => diff);
    try {
      const result = await backend.applyEdit(
        (doc) => {
          const before = own === undefined ? { ...doc } : null;
          edit(doc);
          if (appended !== undefined) index = list(doc, appended).length - 1;
          if (before !== null) diff = configDiff(before, doc);
        },
        source,
        changes,
      );
      // Changes made together share one apply: each answer tells its own change.
      return { json: { ...result, diff: changes(), dryRun: false } };
    } catch (err) {
      const e = err as Error & { field?: string };
      const at = `${appended}[${index}]`;
      if (appended !== undefined && e.field?.startsWith(at)) throw new ApiError(400, 'VR_CONFIG', e.field.slice(at.length).replace(/^\./, ''), e.message.replace(`${e.field}: `, ''));
      throw err;
    }
  };
  const list = (doc: Record<string, unknown>, key: string): unknown[] => (Array.isArray(doc[key]) ? (doc[key] as unknown[]) : []);
  const samePrefix = (a: unknown, b: string) => {
    const text = canonicalPrefix(a);
    return text !== null && text === canonicalPrefix(b);
  };
  /** A prefix or address the request gives: 400 if it is none, naming `field`. */
  const needPrefix = (text: string, field: string, what: string) => {
    if (canonicalPrefix(text) === null) throw new ApiError(400, 'VR_INVALID', field, `must be ${what}, got ${JSON.stringify(text).slice(0, 80)}`);
  };
  /**
   * The static routes to each of `prefixes`, in `doc`: checked as the request comes (a quick
   * 404), and again in the edit's turn, when changes queued before it (a DELETE of the same
   * prefix) have been applied: a removal of nothing is a 404 then too, not a 200.
   */
  const needRoutes = (doc: Record<string, unknown>, prefixes: readonly string[], field: (k: number) => string) => {
    const routes = list(doc, 'routes');
    const missing = prefixes.findIndex((p) => !hasRouteTo(routes, p));
    if (missing >= 0) throw new ApiError(404, 'VR_NOT_FOUND', field(missing), `no static route to ${prefixes[missing]}`);
  };
  const needNeighbour = (doc: Record<string, unknown>, address: string) => {
    if (!list(doc, 'neighbours').some((n) => samePrefix((n as { address?: unknown }).address, address))) throw new ApiError(404, 'VR_NOT_FOUND', 'address', `no static neighbour ${address}`);
  };

  const captures = new CaptureHub(() => backend.capture());


  const routes: ApiRoute[] = [
    {
      method: 'GET', path: '/ports', summary: 'the ports: config and counters',
      handle: async () => {
        const counters = backend.stats().ports;
        const states = await backend.portStates();
        return { json: backend.ports().map((p, i) => ({ ...p, state: states?.[i] ?? null, counters: summary(counters[p.name]) })) };
      },
    },
    {
      method: 'GET', path: '/ports/{name}', summary: 'one port: config and all its counters, with packets and bytes per queue pair',
      handle: async (req) => {
        const ports = backend.ports();
        const i = ports.findIndex((p) => p.name === req.params.name);
        if (i < 0) throw new ApiError(404, 'VR_NOT_FOUND', 'name', `no port named ${req.params.name}`);
        const states = await backend.portStates();
        return { json: { ...ports[i], state: states?.[i] ?? null, counters: backend.stats().ports[ports[i].name] } };
      },
    },
    {
      method: 'POST', path: '/ports', summary: 'adds a vhost-user port (applied live: the other ports stay connected while the PMDs restart on the new layout)', body: PortBody, response: ApplyResultBody,
      handle: async (req) => {
        const port = checkBody(PortBody, req.body);
        try {
          return await change((doc) => (doc.ports = [...list(doc, 'ports'), port]), `POST /ports (${port.name})`, 'ports');
        } catch (err) {
          // The port's socket could not be made: the request's field for it.
          const e = err as Error & { code?: string; committed?: boolean };
          if (e.code === 'VR_PORT' && e.committed !== true) throw new ApiError(400, 'VR_PORT', 'socket', e.message);
          throw err;
        }
      },
    },
    {
      method: 'DELETE', path: '/ports/{name}', summary: 'removes a port: its frontend is disconnected and its socket removed', response: ApplyResultBody,
      handle: (req) => {
        const name = req.params.name;
        const needPort = (doc: Record<string, unknown>) => {
          if (list(doc, 'ports').some((p) => (p as { name?: unknown }).name === name)) return;
          // A port the router made itself (a Linux mirror's) goes with its mirror.
          if (backend.ports().some((p) => p.name === name)) throw new ApiError(400, 'VR_INVALID', 'name', `${name} is not a port of the config (a Linux mirror's port): it goes when its mirror does`);
          throw new ApiError(404, 'VR_NOT_FOUND', 'name', `no port named ${name}`);
        };
        needPort(backend.document());
        return change((d) => {
          needPort(d);
          d.ports = list(d, 'ports').filter((p) => (p as { name?: unknown }).name !== name);
        }, `DELETE /ports/${name}`);
      },
    },
    {
      method: 'PUT', path: '/ports/{name}/queues/{queue}', summary: 'moves a queue pair of a port to the PMD on another CPU (its rxqAffinity; the frontend stays connected)', body: QueueMoveBody, response: ApplyResultBody,
      handle: async (req) => {
        const { cpu } = checkBody(QueueMoveBody, req.body);
        const { name, queue } = req.params;
        const port = backend.ports().find((p) => p.name === name);
        if (port === undefined) throw new ApiError(404, 'VR_NOT_FOUND', 'name', `no port named ${name}`);
        // A port the router made itself (a Linux mirror's) has no entry to pin its queue in.
        const inDocument = list(backend.document() as Record<string, unknown>, 'ports').some((p) => (p as { name?: unknown }).name === name);
        if (!inDocument) throw new ApiError(400, 'VR_INVALID', 'name', `${name} is not a port of the config (a Linux mirror's port): its queue cannot be pinned`);
        const queues = Number(port.queues);
        if (queues === 0) throw new ApiError(404, 'VR_NOT_FOUND', 'queue', `port ${name} is a VLAN of ${String(port.parent)}: it has no queues of its own (its parent's carry its frames)`);
        if (!/^\d+$/.test(queue) || Number(queue) >= queues) throw new ApiError(404, 'VR_NOT_FOUND', 'queue', `port ${name} has queue pairs 0 to ${queues - 1}, not ${queue}`);
        // The key as the config writes it ("01" is queue pair 1).
        const pair = String(Number(queue));
        try {
          // A new port entry: the document's objects are never changed in place (applyEdit).
          return await change((d) => {
            d.ports = list(d, 'ports').map((p) => {
              const entry = p as Record<string, unknown>;
              return entry.name === name ? { ...entry, rxqAffinity: { ...(entry.rxqAffinity as object | undefined), [pair]: cpu } } : p;
            });
          }, `PUT /ports/${name}/queues/${pair}`);
        } catch (err) {
          const e = err as Error & { field?: string };
          if (e.field?.includes('.rxqAffinity')) throw new ApiError(400, 'VR_CONFIG', 'cpu', e.message.replace(`${e.field}: `, ''));
          throw err;
        }
      },
    },
    {
      method: 'GET', path: '/ports/{name}/capture', summary: 'captures the port\'s frames, both directions, as pcapng: each received frame with what every stage did to it (comments) and the verdict',
      query: CAPTURE_QUERY, produces: 'application/x-pcapng', sensitive: true,
      handle: (req) => ({ stream: captures.open(req.params.name, req.query) }),
    },
    { method: 'GET', path: '/counters', summary: 'every port\'s counters: packets, bytes, drops by reason, plugins\' drops and counters, packets and bytes per queue pair', handle: () => ({ json: backend.stats().ports }) },
    { method: 'GET', path: '/pmds', summary: 'the PMD threads: CPU, packets taken from and written into guests, busy time (ms) and rounds, ns per packet while busy, the queue pairs each polls', handle: () => ({ json: backend.stats().pmds }) },
    { method: 'GET', path: '/plugins', summary: 'the pipeline\'s plugins, in order, with their tables', handle: () => ({ json: backend.plugins() }) },
    {
      method: 'GET', path: '/plugins/{name}', summary: 'one plugin: version, file, tables, and its config as the document in force has it (a built-in\'s top-level keys, its "plugins" entry)',
      handle: (req) => {
        const plugin = backend.plugins().find((p) => p.name === req.params.name);
        if (plugin === undefined) throw new ApiError(404, 'VR_NOT_FOUND', 'name', `the pipeline has no plugin ${req.params.name}`);
        return { json: { ...plugin, config: pluginConfigOf(backend.document(), plugin.name) } };
      },
    },
    {
      method: 'GET', path: '/plugins/{name}/{table}', summary: 'a table of a plugin (routing: routes, neighbours; acl: rules; ratelimit: policers)',
      handle: (req) => table(req.params.name, req.params.table, req.query, true),
    },
    {
      method: 'GET', path: '/routes', summary: 'the routes: connected, static, blackhole, and those learned from route sources (written out as they are read: a full table is long; see the query)',
      query: ROUTES_QUERY,
      handle: (req) => table('routing', 'routes', req.query),
    },
    {
      method: 'POST', path: '/routes', summary: 'adds a static route (applied live)', body: RouteBody, response: ApplyResultBody,
      handle: (req) => {
        const route = checkBody(RouteBody, req.body);
        return change((doc) => routeDraft(doc).add(route), 'POST /routes', 'routes', () => [{ key: 'routes', added: [route], removed: [] }]);
      },
    },
    {
      method: 'PATCH', path: '/routes', summary: 'adds and removes static routes in one change: {"add": [routes], "remove": [prefixes]} (removals first)', body: RouteBatchBody, response: ApplyResultBody,
      handle: async (req) => {
        const { add = [], remove = [] } = checkBody(RouteBatchBody, req.body);
        remove.forEach((p, k) => needPrefix(p, `remove[${k}]`, 'a prefix such as 192.0.2.0/24'));
        needRoutes(backend.document(), remove, (k) => `remove[${k}]`);
        let removed: unknown[] = [];
        let kept = 0;
        try {
          return await change((d) => {
            needRoutes(d, remove, (k) => `remove[${k}]`);
            const draft = routeDraft(d);
            removed = draft.remove(remove);
            kept = draft.routes.length;
            for (const route of add) draft.add(route);
          }, `PATCH /routes (+${add.length} -${remove.length})`, undefined, () => [{ key: 'routes', added: add, removed }]);
        } catch (err) {
          // A refused added route is named by its place in "add".
          const e = err as Error & { field?: string };
          const at = /^routes\[(\d+)\](.*)$/.exec(e.field ?? '');
          if (at !== null && Number(at[1]) >= kept) throw new ApiError(400, 'VR_CONFIG', `add[${Number(at[1]) - kept}]${at[2]}`, e.message.replace(`${e.field}: `, ''));
          throw err;
        }
      },
    },
    {
      method: 'DELETE', path: '/routes/{prefix}', summary: 'removes the static routes to a prefix (URL-encoded: 192.0.2.0%2F24)', response: ApplyResultBody,
      handle: (req) => {
        const prefix = req.params.prefix;
        needPrefix(prefix, 'prefix', 'a prefix such as 192.0.2.0%2F24');
        needRoutes(backend.document(), [prefix], () => 'prefix');
        let removed: unknown[] = [];
        return change((d) => {
          needRoutes(d, [prefix], () => 'prefix');
          removed = routeDraft(d).remove([prefix]);
        }, `DELETE /routes/${prefix}`, undefined, () => [{ key: 'routes', added: [], removed }]);
      },
    },
    { method: 'GET', path: '/neighbours', summary: 'the neighbour table: address, MAC, port, the port whose share it counts in (owner), state', handle: (req) => table('routing', 'neighbours', req.query) },
    {
      method: 'POST', path: '/neighbours', summary: 'adds a static neighbour', body: NeighbourBody, response: ApplyResultBody,
      handle: (req) => {
        const n = checkBody(NeighbourBody, req.body);
        return change((doc) => (doc.neighbours = [...list(doc, 'neighbours'), n]), 'POST /neighbours', 'neighbours');
      },
    },
    {
      method: 'DELETE', path: '/neighbours/{address}', summary: 'removes a static neighbour', response: ApplyResultBody,
      handle: (req) => {
        const address = req.params.address;
        needPrefix(address, 'address', 'an IPv4 or IPv6 address');
        needNeighbour(backend.document(), address);
        return change((d) => {
          needNeighbour(d, address);
          d.neighbours = list(d, 'neighbours').filter((n) => !samePrefix((n as { address?: unknown }).address, address));
        }, `DELETE /neighbours/${address}`);
      },
    },
    { method: 'GET', path: '/acl', summary: 'the ACL rules in order, with their hits', handle: (req) => table('acl', 'rules', req.query) },
    {
      method: 'PUT', path: '/acl', summary: 'replaces the ACL rules (and the default action), applied live', body: AclBody, response: ApplyResultBody,
      handle: async (req) => {
        needPlugin('acl');
        const body = checkBody(AclBody, req.body);
        try {
          return await change((doc) => {
            doc.acl = body.rules;
            if (body.default !== undefined) doc.aclDefault = body.default;
          }, 'PUT /acl');
        } catch (err) {
          // The config's words for the request's: acl[2].dstPort is rules[2].dstPort here.
          const e = err as Error & { field?: string };
          if (e.field?.startsWith('acl[') === true) throw new ApiError(400, 'VR_CONFIG', `rules${e.field.slice(3)}`, e.message.replace(`${e.field}: `, ''));
          if (e.field === 'aclDefault') throw new ApiError(400, 'VR_CONFIG', 'default', e.message.replace(`${e.field}: `, ''));
          throw err;
        }
      },
    },
    { method: 'GET', path: '/policers', summary: 'the policers with their colour counters', handle: (req) => table('ratelimit', 'policers', req.query) },
    { method: 'GET', path: '/config', summary: 'the config document in force', handle: () => ({ json: backend.document() }) },
    {
      method: 'PUT', path: '/config', summary: 'applies a whole config document: the diff live; with dryRun only checks it and returns the diff; with confirm, rolls back unless POST /config/confirm follows in time',
      body: ConfigBody, response: ApplyResultBody,
      query: { dryRun: '1: check and return the diff, change nothing', confirm: 'seconds: roll back unless confirmed in time (commit confirmed)' },
      handle: async (req) => {
        const doc = checkBody(ConfigBody, req.body);
        const dryRunText = req.query.get('dryRun');
        if (dryRunText !== null && !['1', 'true', '0', 'false'].includes(dryRunText)) throw new ApiError(400, 'VR_INVALID', 'dryRun', 'must be 1 or true (check only), 0 or false');
        const dryRun = dryRunText === '1' || dryRunText === 'true';
        const seconds = req.query.get('confirm');
        if (seconds !== null && !(Number(seconds) >= 1 && Number(seconds) <= 3600)) throw new ApiError(400, 'VR_INVALID', 'confirm', 'must be a number of seconds from 1 to 3600');
        if (dryRun && seconds !== null) throw new ApiError(400, 'VR_INVALID', 'confirm', 'a dry run changes nothing, so there is nothing to confirm: give one of dryRun and confirm');
        if (dryRun) return { json: { ...(await backend.apply(doc, { dryRun, source: 'PUT /config (dry run)' })), dryRun } };
        try {
          return { json: { ...(await backend.commit(doc, seconds === null ? null : Number(seconds), 'PUT /config')), dryRun } };
        } catch (err) {
          throw confirmRefusal(err);
        }
      },
    },
    {
      method: 'POST', path: '/config/confirm', summary: 'keeps the change of a PUT /config?confirm=S',
      handle: async () => {
        try {
          await backend.confirm();
        } catch (err) {
          throw confirmRefusal(err);
        }
        return { json: { confirmed: true } };
      },
    },
    {
      method: 'GET', path: '/route-sources', summary: 'the route sources (netlink in a namespace, FPM): state, routes learned, and routes left out by why (another table, Linux\'s own connected routes, a gateway of another family...)',
      handle: () => ({ json: backend.routeSources() }),
    },
    { method: 'GET', path: '/dataplane', summary: 'the data-plane process: its pid, the spare\'s (pmd.spare), how often it died (the last time, how, and restartMs: from the death to the next one\'s PMDs taking frames again) and was upgraded (the last time, and what it answered: the pause and its steps)', handle: () => ({ json: backend.dataplane() }) },
    {
      method: 'POST', path: '/dataplane/upgrade', summary: 'starts a data-plane process from the code now on disk and hands it the queues; frontends stay connected. Answers the new pid and how long forwarding paused',
      handle: async () => {
        try {
          return { json: await backend.upgrade() };
        } catch (err) {
          const e = err as Error & { code?: string };
          // VR_BUSY (the data plane restarts: try again) or VR_UPGRADE (it failed, with why).
          throw new ApiError(503, e.code === 'VR_BUSY' ? 'VR_BUSY' : 'VR_UPGRADE', '', e.message);
        }
      },
    },
    {
      method: 'POST', path: '/config/save', summary: 'writes the config in force to the config file (not while a change waits for its confirm)',
      handle: async () => {
        try {
          return { json: { saved: await backend.save() } };
        } catch (err) {
          if (err instanceof ConfirmError) throw confirmRefusal(err);
          throw new ApiError(500, 'VR_SAVE', '', (err as Error).message);
        }
      },
    },
    {
      method: 'POST', path: '/reload', summary: 'reads the config file and plugin files again and applies them (as SIGHUP)', response: ApplyResultBody,
      handle: async () => ({ json: { ...(await backend.reload()), dryRun: false } }),
    },
    {
      method: 'GET', path: '/metrics', summary: 'Prometheus text format', produces: 'text/plain; version=0.0.4',
      handle: async () => {
        const pipeline = backend.pipeline();
        const rules = pipeline.includes('acl') ? [...((await backend.table('acl', 'rules')) ?? [])].filter((r) => r !== null) : [];
        const policers = pipeline.includes('ratelimit') ? [...((await backend.table('ratelimit', 'policers')) ?? [])].filter((r) => r !== null) : [];
        return { text: renderMetrics(backend.stats(), { gauges: await backend.gauges(), rules, policers }), contentType: 'text/plain; version=0.0.4; charset=utf-8' };
      },
    },
  ];
  routes.push({ method: 'GET', path: '/openapi.json', summary: 'this API, as OpenAPI 3.1', handle: () => ({ json: openApiDocument(routes) }) });
  for (const r of routes) if (r.method !== 'GET') refuseWhatIsNotTaken(r);
  return routes;
}

/**
 * A change refuses a query parameter it does not take (`PUT /config?dryrun=1`, a slip for
 * dryRun, must not apply the change for real), and a body if it takes none (`POST /reload
 * {"dryRun": true}` must not reload for real).
 */
function refuseWhatIsNotTaken(route: ApiRoute): void {
  const known = Object.keys(route.query ?? {});
  const handle = route.handle;
  route.handle = (req) => {
    for (const key of req.query.keys()) {
      if (!known.includes(key)) throw new ApiError(400, 'VR_INVALID', key, `${route.method} ${route.path} takes ${known.length === 0 ? 'no query parameter' : `only ${known.join(', ')}`}`);
    }
    if (route.body === undefined && req.body !== undefined) throw new ApiError(400, 'VR_INVALID', '', `${route.method} ${route.path} takes no body`);
    return handle(req);
  };
}

/** A plugin's part of the config document: its "plugins" entry (but the path) and, for a built-in, its top-level keys. */
function pluginConfigOf(document: Record<string, unknown>, name: string): Record<string, unknown> {
  const plugins = document.plugins as Record<string, Record<string, unknown>> | undefined;
  const entry = (plugins !== undefined && Object.hasOwn(plugins, name) ? plugins[name] : {}) as Record<string, unknown>;
  const { path: _path, ...own } = entry;
  const topLevel = Object.entries(PLUGIN_TOP_LEVEL_KEYS).filter(([key, k]) => k.plugin === name && document[key] !== undefined);
  return { ...own, ...Object.fromEntries(topLevel.map(([key]) => [key, document[key]])) };
}

function summary(s: PortStats | undefined) {
  if (s === undefined) return null;
  const drops = Object.values(s.drops).reduce((a, b) => a + b, 0) + Object.values(s.plugins).reduce((a, p) => a + Object.values(p.drops).reduce((x, y) => x + y, 0), 0);
  return { rx_packets: s.rx_packets, tx_packets: s.tx_packets, rx_bytes: s.rx_bytes, tx_bytes: s.tx_bytes, drops };
}
