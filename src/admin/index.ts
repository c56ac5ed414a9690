// Starts the admin endpoint of a running supervisor: the HTTP side (http.ts) with the
// resources of api.ts, backed by the supervisor.
import { createLog } from '../log.ts';
import type { Supervisor } from '../control/supervisor.ts';
import { adminRoutes, type AdminBackend } from './api.ts';
import { AdminHttp } from './http.ts';

const log = createLog('admin');

export async function startAdmin(supervisor: Supervisor): Promise<AdminHttp> {
  const config = supervisor.running.admin;
  const backend: AdminBackend = {
    document: () => supervisor.runningDocument as Record<string, unknown>,
    apply: (document, options) => supervisor.apply(document, options),
    applyEdit: (edit, source, changes) => supervisor.applyEdit(edit, source, changes),
    commit: (document, seconds, source) => supervisor.commit(document, seconds, source),
    confirm: () => supervisor.confirmChange(),
    save: () => supervisor.save(),
    reload: () => supervisor.reloadFile('POST /reload'),
    stats: () => supervisor.stats(),
    ports: () => {
      const cpus = supervisor.queueCpus();
      return supervisor.running.ports.map((p) => ({ ...p, queueCpus: cpus[p.name] }));
    },
    pipeline: () => supervisor.running.pipeline,
    plugins: () => supervisor.pluginList(),
    table: (plugin, table, query) => supervisor.pluginTable(plugin, table, query),
    gauges: () => supervisor.pluginGauges(),
    portStates: () => supervisor.portStates(),
    capture: () => supervisor.captureSource(),
    dataplane: () => supervisor.dataplaneInfo(),
    upgrade: () => supervisor.upgrade(),
    routeSources: () => supervisor.routeSourceStatus(),
  };
  const http = new AdminHttp(config, adminRoutes(backend), log);
  await http.listen();
  const l = config.listen;
  if (l.kind === 'unix') log.info(`admin endpoint on ${l.path} (mode 0600)`, 'admin.listening', { path: l.path });
  else {
    log.info(`admin endpoint on ${l.host}:${http.port}`, 'admin.listening', { host: l.host, port: http.port });
    if (config.tokenFile === null) log.warn(`the admin endpoint on ${l.host}:${l.port} takes changes and captures without a token: any local user can change the router and read its guests' traffic (set admin.tokenFile)`);
  }
  return http;
}
