// What the supervisor process and the data-plane process say to each other, on two
// sockets: one from the supervisor's main thread (the PMDs' lives, the tables) and one from
// the vhost control thread (the commands of the ports' connections, with their fds).
import type { GuestRegion, PmdReply, PortCommand } from '../vhost/dataplane-link.ts';
import type { PmdThreadData, TablesUpdate } from '../pipeline/pmd-thread.ts';
import type { SharedRef } from '../sys/shared-arena.ts';

/** fd numbers the data-plane process is started with (its stdio entries 3 and 4). */
export const SUPERVISOR_FD = 3;
export const COMMANDS_FD = 4;

/** What a PMD is started with: everything but its command port, shared memory as SharedRefs. */
export type PmdSpawnData = Omit<PmdThreadData, 'commands' | 'arena' | 'standby' | 'lifeLocks' | 'handOverNice'>;

export type SupervisorMessage =
  /**
   * the shared memory (its fd comes with the message), and the process's block of life
   * locks in it (life-locks.ts): its main thread holds the first, each PMD thread another;
   * `counterLayout`, the supervisor's COUNTER_LAYOUT (a process whose code's differs
   * refuses to serve); `controlCpus`, where its threads but the PMDs go once it has loaded,
   * when it was started on more CPUs to load (a spare at vrouter's start), or null: they stay
   * where they were born
   */
  | { t: 'init'; arenaBytes: number; nice: number; lifeLocks: SharedRef; counterLayout: string; controlCpus: number[] | null }
  /**
   * starts PMD `pmd`; `incarnation` names this start of it in every later message.
   * `standby`: it loads everything, says so ('pmd-standby'), and waits for 'go' before it
   * touches shared memory (an upgrade: the running data plane forwards meanwhile)
   */
  | { t: 'spawn'; pmd: number; incarnation: number; data: PmdSpawnData; standby: boolean }
  /** the PMDs in standby start, each with its data as it is now (by PMD) */
  | { t: 'go'; data: PmdSpawnData[] }
  /** every PMD stops between two bursts (its used rings published) and answers 'quiesced' */
  | { t: 'quiesce' }
  | { t: 'terminate'; pmd: number; incarnation: number }
  | { t: 'tables'; update: TablesUpdate };

export type DataplaneEvent =
  | { t: 'ready' }
  /** it will not serve this supervisor (its code counts in another layout), and says why */
  | { t: 'refused'; reason: string }
  /** a PMD's error, before it exits */
  | { t: 'pmd-error'; pmd: number; incarnation: number; error: string }
  | { t: 'pmd-exit'; pmd: number; incarnation: number; code: number }
  /** `refused`: why its code cannot serve this supervisor (another vrouter's plugins), or null */
  | { t: 'pmd-standby'; pmd: number; incarnation: number; refused: string | null }
  | { t: 'quiesced' };

/** A guest memory region in a 'memory' command; `fd` is an index into the message's fds. */
export type RegionOnWire = GuestRegion;

/** A PMD command as it travels: fd fields are indices into the message's fds (-1: none). */
export type WireCommand = PortCommand;

export type CommandMessage =
  | { t: 'command'; id: number; pmd: number; incarnation: number; cmd: WireCommand }
  /** regions no PMD views any more: unmapped */
  | { t: 'unmap'; ids: number[] };

export interface CommandReply {
  t: 'reply';
  reply: PmdReply;
}
