// The backends measured side by side, each forwarding between two vhost-user sockets with
// its busy core on CPU 1: vrouter, dpdk-testpmd's net_vhost io forwarding (the ceiling: it
// only moves buffers) and OVS-DPDK with a NORMAL (MAC-learning) bridge, the switch
// operators would otherwise run.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { startVrouter } from '../../test/support/vrouter-process.ts';
import { jumboMtu, testpmdFrameArgs } from './generator.ts';
import { ovsJob, vrouterJob, type JobName } from './jobs.ts';
import { dpdkPrefix, stop, track, waitFor } from './processes.ts';
import { dataplanePids, sparePids } from '../../test/support/traffic.ts';

export interface RunningBackend {
  /** resident memory of the backend process, in MiB */
  rssMiB(): number;
  stop(): Promise<void>;
}

export interface Backend {
  name: string;
  /** the generator's ports listen and the backend connects */
  generatorListens: boolean;
  /** why it cannot run on this machine, or null */
  unavailable(): string | null;
  /** the jobs it can do (see jobs.ts) */
  jobs: readonly JobName[];
  /** starts forwarding frames of `frameSize` bytes between the two sockets (called after the generator when it listens) */
  start(sockets: [string, string], job: JobName, frameSize: number): Promise<RunningBackend>;
}

/**
 * Resident memory of a process, without the guests' shared memory it maps (RssShmem):
 * that is the frontends' RAM, the same for every backend, not the backend's own.
 */
export function ownRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return (kb('VmRSS') - kb('RssShmem')) / 1024;
}

/**
 * vrouter's processes: the supervisor whole (the shared memory it maps is vrouter's own
 * state, no guest's), the data plane and its spare without the guests' memory.
 */
export function vrouterRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const supervisorMiB = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
  return [...dataplanePids(pid), ...sparePids(pid)].reduce((sum, child) => sum + ownRssMiB(child), supervisorMiB);
}

/** vrouter with `cores` PMDs: this tree's build, or `revision`'s (bench --against). */
export function vrouterBackend(cores: number[], revision?: { name: string; bin: string }): Backend {
  return {
    name: `vrouter ${revision ? `${revision.name} ` : ''}${cores.length} PMD${cores.length > 1 ? 's' : ''}`,
    generatorListens: false,
    unavailable: () => null,
    jobs: ['bridged', 'routed', 'full'],
    async start(sockets, job, frameSize) {
      const vr = await startVrouter(vrouterJob(job, sockets, cores, jumboMtu(frameSize)), undefined, undefined, revision?.bin);
      return { rssMiB: () => vrouterRssMiB(vr.proc.pid!), stop: async () => void (await vr.stop()) };
    },
  };
}

export const testpmdIoBackend: Backend = {
  name: 'testpmd io',
  generatorListens: false,
  jobs: ['bridged'],
  unavailable: () => (spawnSync('dpdk-testpmd', ['--version']).error ? 'dpdk-testpmd is not installed' : null),
  async start(sockets, _job, frameSize) {
    const p = track('stdbuf', [
      '-oL', 'dpdk-testpmd', '--no-huge', '-m', '512', '--no-pci', '--file-prefix', dpdkPrefix('vhost'), '--lcores', '0@0,1@1',
      '--vdev', `net_vhost0,iface=${sockets[0]},queues=1`, '--vdev', `net_vhost1,iface=${sockets[1]},queues=1`, '--',
      // --stats-period keeps testpmd running without a terminal (else it exits at stdin EOF)
      '--forward-mode=io', '--total-num-mbufs=16384', '--nb-cores=1', '--stats-period', '10', '-a', ...testpmdFrameArgs(frameSize),
    ]);
    await waitFor('testpmd net_vhost sockets', () => (existsSync(sockets[0]) && existsSync(sockets[1])) || p.proc.exitCode !== null);
    if (p.proc.exitCode !== null) throw new Error(`testpmd net_vhost exited:\n${p.output().slice(-1500)}`);
    return { rssMiB: () => ownRssMiB(p.proc.pid!), stop: () => stop(p) };
  },
};

const OVS_VSWITCHD = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';

export const ovsDpdkBackend: Backend = {
  name: 'OVS-DPDK',
  generatorListens: true,
  jobs: ['bridged', 'routed', 'full'],
  unavailable: () => (existsSync(OVS_VSWITCHD) ? null : `${OVS_VSWITCHD} not found (Debian openvswitch-switch-dpdk)`),
  async start(sockets, job, frameSize) {
    // A private database and run directory; OVS without hugepages needs legacy memory,
    // no PCI probing and a memory size its default mbuf pools fit in.
    const dir = mkdtempSync(join(tmpdir(), 'vrouter-bench-ovs-'));
    const db = `unix:${dir}/db.sock`;
    const env = { ...process.env, OVS_RUNDIR: dir, OVS_DBDIR: dir, OVS_LOGDIR: dir, OVS_SYSCONFDIR: dir };
    const run = (cmd: string, args: string[]) => {
      const r = spawnSync(cmd, args, { env, encoding: 'utf8', timeout: 60000 });
      if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.stdout}`);
    };
    run('ovsdb-tool', ['create', `${dir}/conf.db`, '/usr/share/openvswitch/vswitch.ovsschema']);
    run('ovsdb-server', [`${dir}/conf.db`, `--remote=punix:${dir}/db.sock`, `--pidfile=${dir}/ovsdb.pid`, `--unixctl=${dir}/ovsdb.ctl`, '--detach', `--log-file=${dir}/ovsdb.log`]);
    const pids = () => ['ovsdb.pid', 'vswitchd.pid'].map((f) => join(dir, f)).filter(existsSync).map((f) => Number(readFileSync(f, 'utf8')));
    const cleanup = () => {
      for (const pid of pids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      rmSync(dir, { recursive: true, force: true });
    };
    try {
      run('ovs-vsctl', [`--db=${db}`, '--no-wait', 'init']);
      run('ovs-vsctl', [`--db=${db}`, '--no-wait', 'set', 'Open_vSwitch', '.', 'other_config:dpdk-init=true', 'other_config:pmd-cpu-mask=0x2', 'other_config:dpdk-lcore-mask=0x1', `other_config:dpdk-extra=--no-huge --legacy-mem --no-pci -m 3072 --file-prefix=${dpdkPrefix('ovs')}`]);
      run(OVS_VSWITCHD, [db, `--pidfile=${dir}/vswitchd.pid`, `--unixctl=${dir}/vswitchd.ctl`, `--log-file=${dir}/vswitchd.log`, '--detach']);
      run('ovs-vsctl', [`--db=${db}`, '--timeout=30', 'add-br', 'br0', '--', 'set', 'bridge', 'br0', 'datapath_type=netdev']);
      const mtu = jumboMtu(frameSize);
      sockets.forEach((s, i) => run('ovs-vsctl', [`--db=${db}`, '--timeout=30', 'add-port', 'br0', `vh${i}`, '--', 'set', 'Interface', `vh${i}`, 'type=dpdkvhostuserclient', `options:vhost-server-path=${s}`, ...(mtu === undefined ? [] : [`mtu_request=${mtu}`])]));
      // The generator sends to a MAC no port learns, so NORMAL floods every frame: to the
      // other port, as vrouter's bridge does, and to the bridge's own port (a TAP device, a
      // system call per frame), which vrouter's bridge does not have. Left in, it halved
      // OVS-DPDK's bridged rate (2.4-3.4 Mpps at 64 bytes against 4.9-5.4 without).
      run('ovs-ofctl', ['mod-port', `unix:${dir}/br0.mgmt`, 'br0', 'no-flood']);
      const { flows, meters } = ovsJob(job);
      if (flows.length > 0) {
        const ofctl = (args: string[]) => run('ovs-ofctl', ['-O', 'OpenFlow13', ...args.slice(0, 1), `unix:${dir}/br0.mgmt`, ...args.slice(1)]);
        run('ovs-vsctl', [`--db=${db}`, 'set', 'bridge', 'br0', 'protocols=OpenFlow10,OpenFlow13']);
        for (const m of meters) ofctl(['add-meter', m]);
        ofctl(['del-flows']);
        for (const f of flows) ofctl(['add-flow', f]);
      }
    } catch (err) {
      cleanup();
      throw err;
    }
    const vswitchd = pids()[1];
    return { rssMiB: () => ownRssMiB(vswitchd), stop: async () => cleanup() };
  },
};
