// One log format for every thread: "vrouter: <level> <component>: <message>" on stderr.

export interface Log {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export function createLog(component: string): Log {
  const write = (level: string, msg: string) => process.stderr.write(`vrouter: ${level} ${component}: ${msg}\n`);
  return {
    info: (msg) => write('info', msg),
    warn: (msg) => write('warn', msg),
    error: (msg) => write('error', msg),
  };
}
