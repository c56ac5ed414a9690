#!/usr/bin/env node
// vrouter daemon: `vrouter --config FILE` runs in the foreground until SIGTERM or SIGINT.
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { readConfigFile, topologyOf } from '../src/control/config.ts';
import { Supervisor } from '../src/control/supervisor.ts';
import { planPlugins } from '../src/pipeline/loader.ts';
import { createLog } from '../src/log.ts';

// This file runs as bin/vrouter.ts or, built, as dist/bin/vrouter.js.
const PROJECT_ROOT = new URL(import.meta.url.endsWith('.ts') ? '../' : '../../', import.meta.url);
const DEFAULT_CONFIG = fileURLToPath(new URL('config/default.json', PROJECT_ROOT));
const USAGE = `usage: vrouter [--config FILE]

  --config FILE   configuration (default: ${DEFAULT_CONFIG})
  --help          this text

Signals: SIGTERM/SIGINT stop cleanly; SIGUSR1 prints port counters as one JSON line;
SIGHUP reads the config and plugin files again: new routes, rules and policers are
swapped in live; a changed plugin file restarts the PMDs on it; what fails leaves what runs;
SIGUSR2 terminates PMD 0 as a crash would (it is restarted: a drill of the recovery path).`;

const log = createLog('main');
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  log.error(`Node ${process.versions.node} is too old: vrouter needs Node 24 (run it with npx vrouter, or npm start, which use the Node 24 installed by npm install)`);
  process.exit(2);
}

let configPath = DEFAULT_CONFIG;
try {
  const { values } = parseArgs({ options: { config: { type: 'string' }, help: { type: 'boolean' } }, strict: true });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (values.config !== undefined) configPath = values.config;
} catch (err) {
  log.error(`${(err as Error).message}\n${USAGE}`);
  process.exit(2);
}

let supervisor: Supervisor;
try {
  const { document, config } = readConfigFile(configPath);
  supervisor = new Supervisor(config, await planPlugins(config.plugins, topologyOf(config)), configPath, document);
} catch (err) {
  log.error(`invalid configuration: ${(err as Error).message}`);
  process.exit(2);
}

process.on('SIGUSR1', () => process.stderr.write(`vrouter: stats ${JSON.stringify(supervisor.stats())}\n`));
process.on('SIGUSR2', () => supervisor.crashPmd(0));
process.on('SIGHUP', () => void supervisor.reload());
let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: stopping`);
    void supervisor.stop().then(() => {
      log.info('stopped');
      process.exit(0);
    });
  });
}

try {
  await supervisor.start();
} catch (err) {
  // A plugin that cannot compile its tables from the config is a config error too.
  if ((err as { code?: string }).code === 'VR_CONFIG') {
    log.error(`invalid configuration: ${(err as Error).message}`);
    process.exit(2);
  }
  log.error(`cannot start: ${(err as Error).message}`);
  process.exit(1);
}
