// What an upgrade answers: the pause of forwarding, and where its time went (each step as
// the time since the pause began, on the monotonic clock all processes share), so that a
// long pause says which link of the hand-over was slow.

/** When each step of the pause ended, in ms since it began. */
export interface PauseSteps {
  /** the old PMDs stopped between two bursts (or were given up on and killed) */
  oldStopped: number;
  /** the new PMDs told to go */
  go: number;
  /** the control thread sent the last command of the queues' hand-over */
  queuesSent: number;
}

export interface UpgradeResult {
  pid: number;
  previousPid: number;
  /** until the new PMDs took frames again */
  pauseMs: number;
  pauseSteps: PauseSteps;
  totalMs: number;
}

export function describePause(steps: PauseSteps): string {
  return `old PMDs stopped at ${steps.oldStopped} ms, the new told to go at ${steps.go}, every queue's commands sent at ${steps.queuesSent}`;
}
