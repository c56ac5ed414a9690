#!/usr/bin/env node
// vrouterctl: the operator's command line client of a running vrouter's admin endpoint
// (`vrouterctl --help`). Exit status: 0 done, 1 refused, 2 usage, 3 vrouter unreachable, 4 an answer it could not read or its own failure.
import { fileURLToPath } from 'node:url';

// This file runs as bin/vrouterctl.ts or, built, as dist/bin/vrouterctl.js; without
// --config it looks for the daemon where `vrouter` without --config listens.
const PROJECT_ROOT = new URL(import.meta.url.endsWith('.ts') ? '../' : '../../', import.meta.url);
const DEFAULT_CONFIG = fileURLToPath(new URL('config/default.json', PROJECT_ROOT));

// Checked before the client is loaded: undici 8 does not load on older Node.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(`vrouterctl: Node ${process.versions.node} is too old: vrouterctl needs Node 24 (run it with npx vrouterctl, which uses the Node 24 installed by npm install)\n`);
  process.exit(2);
}

const { main } = await import('../src/cli/main.ts');
// `vrouterctl top | head` closes the pipe early: that ends the command, it is no failure.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});
process.exitCode = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env }, DEFAULT_CONFIG);
