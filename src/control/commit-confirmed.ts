// Commit confirmed (PUT /config?confirm=S): a change that rolls itself back unless it is
// confirmed in time, as a router's `commit confirmed` does, so that a change that cuts the
// operator off undoes itself. Every step takes its turn in the supervisor's queue of
// applies, in order with all other changes: the document to go back to is the one in force
// when the change's turn came (not when its request arrived), a rollback that comes due is
// queued then and applied in its turn, and a save waits for what was queued before it.
import type { ApplyResult } from './supervisor.ts';

/** What commit-confirmed needs of the supervisor. */
export interface ApplyQueue {
  /** runs `job` after every apply queued before it, and before those queued after */
  queue<T>(job: () => Promise<T>): Promise<T>;
  /** applies a whole document now, only from a job of queue(); `rollback`: the plugin files are not read again (the code in use stays, a file changed on disk since is not loaded) */
  applyNow(document: unknown, source: string, rollback?: boolean): Promise<ApplyResult>;
  /** the document in force */
  document(): unknown;
  /** a rollback's failure, for the log */
  rollbackRefused(message: string): void;
}

/** A refusal of commit-confirmed, with the endpoint's code for it. */
export class ConfirmError extends Error {
  readonly code: 'VR_ROLLED_BACK' | 'VR_UNCONFIRMED' | 'VR_NOT_FOUND';

  constructor(code: ConfirmError['code'], message: string) {
    super(message);
    this.code = code;
  }
}

interface Waiting {
  /** the document in force before the first unconfirmed change */
  previous: unknown;
  timer: NodeJS.Timeout;
  /** it came due: its rollback is queued */
  due: boolean;
  /** the config file replaced it before its rollback's turn: the rollback does nothing */
  replaced: boolean;
}

export class CommitConfirmed {
  private readonly applies: ApplyQueue;
  private waiting: Waiting | null = null;
  /** the changes whose rollback came due, in order (one the file replaced before its turn does nothing) */
  private readonly dueRollbacks: Waiting[] = [];
  /** commits queued or applying: a confirm then means the last of them */
  private pending = 0;

  constructor(applies: ApplyQueue) {
    this.applies = applies;
  }

  /**
   * Applies a whole document in its turn. With `seconds`, it is rolled back then unless
   * confirmed: to the document in force before it, or before the first of the changes
   * still waiting. Without, it keeps the change waiting (a plain commit confirms, as a
   * router's does). A change whose apply a rollback overtook (due while it waited or
   * applied, and queued after it) is refused with VR_ROLLED_BACK: it was undone too.
   */
  commit(document: unknown, seconds: number | null, source: string): Promise<ApplyResult & { rollbackInSeconds?: number }> {
    const dueBefore = this.dueRollbacks.length;
    this.pending++;
    const done = () => void this.pending--;
    return this.applies.queue(async () => {
      const before = this.applies.document();
      const result = await this.applies.applyNow(document, source);
      if (this.dueRollbacks.slice(dueBefore).some((w) => !w.replaced)) throw new ConfirmError('VR_ROLLED_BACK', 'applied, then rolled back with the earlier change that was not confirmed in time: the config in force is the one before that change');
      const previous = this.waiting?.previous ?? before;
      this.settle();
      if (seconds === null) return result;
      const waiting: Waiting = { previous, due: false, replaced: false, timer: setTimeout(() => this.rollBack(waiting), seconds * 1000) };
      waiting.timer.unref();
      this.waiting = waiting;
      return { ...result, rollbackInSeconds: seconds };
    }).finally(done);
  }

  /**
   * POST /config/confirm: keeps the change waiting; one still queued or applying is
   * confirmed once applied (what the operator confirms is the last change sent).
   */
  async confirm(): Promise<void> {
    if (this.waiting?.due === true) throw this.nothingWaits();
    // The change waiting is confirmed now (its deadline may come while another applies)...
    const confirmed = this.confirmNow();
    if (confirmed && this.pending === 0) return;
    // ...and one still queued or applying once applied: the confirm takes its turn after it.
    await this.applies.queue(async () => {
      if (!this.confirmNow() && !confirmed) throw this.nothingWaits();
    });
  }

  /**
   * The document in force replaced whole by the config file (SIGHUP, POST /reload): nothing
   * to roll back any more, also a rollback that came due while the file applied (queued
   * after it). Whether a change was waiting.
   */
  replacedByFile(): boolean {
    if (this.waiting?.due === true) {
      this.waiting.replaced = true;
      this.waiting = null;
      return true;
    }
    return this.confirmNow();
  }

  /** Writes the document in force with `write`, in its turn; refused while a change waits for its confirm (saved, it would outlive its rollback). */
  save<T>(write: () => T): Promise<T> {
    return this.applies.queue(async () => {
      if (this.waiting !== null) throw new ConfirmError('VR_UNCONFIRMED', 'a change waits for its confirm (POST /config/confirm): saved, it would outlive its rollback');
      return write();
    });
  }

  private confirmNow(): boolean {
    if (this.waiting === null || this.waiting.due) return false;
    this.settle();
    return true;
  }

  private nothingWaits(): ConfirmError {
    return this.waiting?.due === true
      ? new ConfirmError('VR_ROLLED_BACK', 'too late: the change was not confirmed in time and is being rolled back')
      : new ConfirmError('VR_NOT_FOUND', 'no change is waiting for a confirm');
  }

  private settle(): void {
    if (this.waiting !== null) clearTimeout(this.waiting.timer);
    this.waiting = null;
  }

  private rollBack(waiting: Waiting): void {
    waiting.due = true;
    this.dueRollbacks.push(waiting);
    void this.applies
      .queue(async () => {
        try {
          if (!waiting.replaced) await this.applies.applyNow(waiting.previous, 'rollback: the change was not confirmed in time', true);
        } finally {
          if (this.waiting === waiting) this.waiting = null;
        }
      })
      .catch((err: Error) => this.applies.rollbackRefused(`the rollback of a change not confirmed in time was refused, the change stays in force: ${err.message}`));
  }
}
