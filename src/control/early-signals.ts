// Imported first by the daemon, before the modules that take a while to load: until
// vrouter's own handlers are in place, a SIGUSR1 would make Node open its inspector on
// 127.0.0.1:9229, where any local user could run code in vrouter, and a SIGUSR2 would end
// the process. Listeners that do nothing keep both from happening (bin/vrouter.ts adds the
// real ones).
process.on('SIGUSR1', () => undefined);
process.on('SIGUSR2', () => undefined);
