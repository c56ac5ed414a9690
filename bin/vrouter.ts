#!/usr/bin/env node
// vrouter daemon: `vrouter --config FILE` runs in the foreground until SIGTERM or SIGINT, or
// until the process that started it exits; `vrouter --check FILE` validates a config file.
import '../src/control/early-signals.ts';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { loadConfigFile, readAdminToken, readConfigFile, topologyOf } from '../src/control/config.ts';
import { closeJobs } from '../src/pipeline/jobs.ts';
import { Supervisor } from '../src/control/supervisor.ts';
import { startAdmin } from '../src/admin/index.ts';
import type { AdminHttp } from '../src/admin/http.ts';
import { planPlugins } from '../src/pipeline/loader.ts';
import { allocatePluginMemory, preparePlugins } from '../src/pipeline/shared-memory.ts';
import { createLog, formatLine, LOG_FORMAT_ENV, logFormat, parseLogFormat, setLogFormat } from '../src/log.ts';
import { setParentDeathSignal } from '../src/sys/libc.ts';

// Read first: the parent vrouter stops with (see below).
const parentAtStart = process.ppid;

// This file runs as bin/vrouter.ts or, built, as dist/bin/vrouter.js.
const PROJECT_ROOT = new URL(import.meta.url.endsWith('.ts') ? '../' : '../../', import.meta.url);
const DEFAULT_CONFIG = fileURLToPath(new URL('config/default.json', PROJECT_ROOT));
const USAGE = `usage: vrouter [--config FILE] [--log-format text|json]
       vrouter --check FILE

  --config FILE        configuration (default: ${DEFAULT_CONFIG})
  --check FILE         validate FILE as a start would (plugins loaded, their tables
                       compiled) and exit: 0 and a summary if valid, 2 and the field at fault
  --log-format FORMAT  text (default): "vrouter: LEVEL THREAD: MESSAGE"; json: one object a
                       line, {"time","level","thread","event","msg",...}; also ${LOG_FORMAT_ENV}
  --help               this text

Its PMDs run in a child process, vrouter-dataplane, with a spare beside it
(vrouter-dataplane-spare, pmd.spare): when the data plane dies, the spare takes over and
the guests stay connected; vrouterctl upgrade replaces it by the code now on disk.
vrouter stops, as on SIGTERM, when the process that started it exits.
Signals: SIGTERM/SIGINT stop cleanly; SIGUSR1 prints port counters as one JSON line;
SIGHUP reads the config and plugin files again: new routes, rules and policers are
swapped in live; ports and bridges added or removed, and a changed plugin file, restart
the PMDs on them (frontends stay connected); what fails leaves what runs;
SIGUSR2 terminates PMD 0 as a crash would (it is restarted: a drill of the recovery path).`;

const log = createLog('supervisor');
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  log.error(`Node ${process.versions.node} is too old: vrouter needs Node 24 (run it with npx vrouter, or npm start, which use the Node 24 installed by npm install)`, 'vrouter.failed');
  process.exit(2);
}

let configPath = DEFAULT_CONFIG;
let checkPath: string | null = null;
try {
  const { values } = parseArgs({ options: { config: { type: 'string' }, check: { type: 'string' }, 'log-format': { type: 'string' }, help: { type: 'boolean' } }, strict: true });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const formatText = values['log-format'] ?? process.env[LOG_FORMAT_ENV];
  if (formatText !== undefined) {
    const format = parseLogFormat(formatText);
    if (format === null) throw new Error(`${values['log-format'] !== undefined ? '--log-format' : LOG_FORMAT_ENV} must be text or json, got ${JSON.stringify(formatText)}`);
    // Before any thread starts: each takes the format from the environment it inherits.
    setLogFormat(format);
  }
  if (values.check !== undefined && values.config !== undefined) throw new Error('--check FILE names the config: give --config or --check, not both');
  if (values.config !== undefined) configPath = values.config;
  if (values.check !== undefined) checkPath = values.check;
} catch (err) {
  log.error(`${(err as Error).message}\n${USAGE}`);
  process.exit(2);
}

// `npx vrouter` runs vrouter under `sh -c`, which does not pass a SIGTERM on: without this,
// stopping npx would leave vrouter running, its sockets behind. The kernel watches the
// thread that started vrouter, not its whole process: a program that starts vrouter from a
// worker thread stops it when that thread ends. Nothing needs cleaning up yet if the
// signal comes before the handlers below are in place (no socket exists).
setParentDeathSignal('SIGTERM');
if (process.ppid !== parentAtStart) {
  log.error(`the process that started vrouter (pid ${parentAtStart}) has exited: not starting`, 'vrouter.failed');
  process.exit(1);
}

if (checkPath !== null) await check(checkPath);

let supervisor: Supervisor;
try {
  const { document, config } = readConfigFile(configPath);
  // Read again when the endpoint starts; here, so that a bad one stops vrouter before it starts anything.
  if (config.admin.tokenFile !== null) readAdminToken(config.admin.tokenFile);
  supervisor = new Supervisor(config, await planPlugins(config.plugins, topologyOf(config)), configPath, document);
} catch (err) {
  invalidConfig(err);
}

process.on('SIGUSR1', () => {
  const stats = supervisor.stats();
  // Asked for, so never rate-limited; the text form is what scripts parse today.
  process.stderr.write(logFormat() === 'json' ? formatLine('json', 'info', 'supervisor', 'counters', 'stats', stats) : `vrouter: stats ${JSON.stringify(stats)}\n`);
});
process.on('SIGUSR2', () => supervisor.crashPmd(0));
/** How long a stop asked for while vrouter starts waits for the start to end. */
const START_WAIT_MS = 30_000;
let stopping = false;
let running = false;
let admin: AdminHttp | null = null;
/**
 * vrouter's start (true once everything runs). A stop or a reload asked for meanwhile waits
 * for it: a stop then stops all the start began, the admin endpoint too, and a reload is
 * not refused for a control thread not yet there. A start that fails stops what it began.
 */
let startup: Promise<boolean>;
process.on('SIGHUP', () => void startup.then((started) => (started && !stopping ? supervisor.reload() : undefined)));
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    const orphaned = signal === 'SIGTERM' && process.ppid !== parentAtStart;
    const why = orphaned ? ` (the process that started vrouter, pid ${parentAtStart}, has exited)` : '';
    log.info(`${signal}: stopping${why}${running ? '' : ', once its start is done'}`, 'vrouter.stopping', { signal, parentExited: orphaned });
    // A start that never ends (a thread blocked in a call) does not keep vrouter from stopping.
    const startEnded = Promise.race([startup, new Promise<boolean>((resolve) => setTimeout(() => resolve(true), START_WAIT_MS).unref())]);
    void startEnded.then(async (started) => {
      if (!started) return;
      await Promise.all([admin?.close(), supervisor.stop()]);
      log.info('stopped', 'vrouter.stopped');
      process.exit(0);
    });
  });
}

startup = (async () => {
  try {
    await supervisor.start();
    admin = await startAdmin(supervisor);
    running = true;
    return true;
  } catch (err) {
    // A plugin that cannot compile its tables from the config is a config error too.
    if ((err as { code?: string }).code === 'VR_CONFIG') invalidConfig(err);
    log.error(`cannot start: ${(err as Error).message}`, 'vrouter.failed');
    // The status even if the stop's waits end with nothing left to keep the process running.
    process.exitCode = 1;
    // What did start goes first: the ports' sockets (a frontend would find them and be
    // refused), the data planes, the threads (one stopped by the exit while it loads would
    // turn it into an abort).
    stopping = true;
    await supervisor.stop().catch((stopErr: Error) => log.warn(`stopping what had started: ${stopErr.message}`));
    process.exit(1);
  }
})();

/** Status 2 and the field at fault, at start and for --check alike. */
function invalidConfig(err: unknown): never {
  const e = err as Error & { field?: string };
  log.error(`invalid configuration: ${e.message}`, 'config.invalid', e.field === undefined ? undefined : { field: e.field });
  process.exit(2);
}

/**
 * --check: everything a start checks before it creates a thread or a socket: the file, its
 * fields, the plugins (loaded, their config checked) and their prepare() (the tables they
 * compile, in the job pool, where errors such as an unreachable gateway are found). What
 * only the host can refuse at start (a socket path, a CPU to pin to) is not tried.
 */
async function check(file: string): Promise<never> {
  try {
    const config = loadConfigFile(file);
    if (config.admin.tokenFile !== null) readAdminToken(config.admin.tokenFile);
    const topology = topologyOf(config);
    const plans = await planPlugins(config.plugins, topology);
    await preparePlugins(plans, allocatePluginMemory(plans), topology);
    const ports = config.ports.length;
    const pmds = config.pmd.cores.length;
    console.log(`${file}: valid: ${ports} port${ports === 1 ? '' : 's'}, ${pmds} PMD${pmds === 1 ? '' : 's'} (CPU ${config.pmd.cores.join(', ')}), pipeline ${config.pipeline.join(', ')}`);
  } catch (err) {
    invalidConfig(err);
  } finally {
    await closeJobs();
  }
  process.exit(0);
}
