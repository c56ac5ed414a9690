// A port's share of the control thread: a token bucket that refills with time, never past
// its burst, and counts each time the port had to wait.
import t from 'tap';
import { ControlBudget } from '../../src/vhost/control-budget.ts';

t.test('the burst at once, then the rate, never more than the burst saved', async (t) => {
  let now = 0;
  let waits = 0;
  const budget = new ControlBudget(() => waits++, 1000, 2000, () => now);
  let taken = 0;
  while (budget.holds(1)) {
    budget.spend(1);
    taken++;
  }
  t.equal(taken, 2000, 'the burst is spent at once');
  t.equal(waits, 1, 'then the port waits (told once)');
  t.equal(budget.throttled, 1, 'and the wait is counted');
  t.equal(budget.msUntil(16), 16, '16 messages come back in 16 ms');
  now += 10;
  t.notOk(budget.holds(16), '10 ms later, not yet');
  now += 6;
  t.ok(budget.holds(16), 'at 16 ms they are there');
  budget.spend(16);
  t.notOk(budget.holds(100), 'a connection (100) waits for more');
  t.equal(budget.msUntil(100), 100, 'a tenth of a second more');
  now += 3_600_000;
  t.ok(budget.holds(2000), 'an hour idle saves the burst');
  t.notOk(budget.holds(2001), 'and no more');
  t.equal(budget.msUntil(0), 0, 'what the bucket holds is there at once');
  t.equal(budget.throttled, 4, 'every wait counted');
});

t.test('a cost beyond what the bucket holds is owed, and paid back first', async (t) => {
  let now = 0;
  const budget = new ControlBudget(() => {}, 1000, 100, () => now);
  t.ok(budget.holds(1), 'a message may come');
  budget.spend(1 + 250); // it made PMDs work beyond the bucket
  t.notOk(budget.holds(1), 'the next waits');
  t.equal(budget.msUntil(1), 152, 'until the debt of 151 and one message are back');
  now += 151;
  t.notOk(budget.holds(1), 'not before');
  now += 1;
  t.ok(budget.holds(1), 'then');
});
