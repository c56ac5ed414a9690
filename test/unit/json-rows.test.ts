// jsonRows, the admin endpoint's streamed lists: pieces of at most ROWS_PER_PIECE rows or
// pauses with the event loop free between them, pauses (LIST_PAUSE) written as nothing,
// and the same JSON whatever the pieces.
import t from 'tap';
import type { ServerResponse } from 'node:http';
import { jsonRows } from '../../src/admin/http.ts';
import { LIST_PAUSE } from '../../src/pipeline/api.ts';

/** What a streamed reply writes, and how many times the event loop ran while it wrote. */
async function streamed(rows: Iterable<unknown>): Promise<{ text: string; turns: number }> {
  const reply = jsonRows(rows);
  if (!('stream' in reply)) return { text: JSON.stringify((reply as { json: unknown }).json), turns: 0 };
  let text = '';
  let turns = 0;
  let done = false;
  const ticking = () => {
    turns++;
    if (!done) setImmediate(ticking);
  };
  setImmediate(ticking);
  await new Promise<void>((resolve) => {
    const res = {
      writeHead: () => res,
      write: (s: string) => ((text += s), true),
      end: (s: string) => {
        text += s;
        done = true;
        resolve();
      },
      on: () => res,
      once: () => res,
      destroy: () => resolve(),
    };
    reply.stream(res as unknown as ServerResponse);
  });
  return { text, turns };
}

t.test('pauses are written as nothing, and the loop runs between pieces', async (t) => {
  function* onlyPauses() {
    for (let k = 0; k < 100_000; k++) yield LIST_PAUSE;
  }
  const empty = await streamed(onlyPauses());
  t.same(JSON.parse(empty.text), [], 'a list of pauses alone is an empty array');
  t.ok(empty.turns >= 40, `the event loop ran ${empty.turns} times while 100,000 pauses went by`);
  function* mixed() {
    for (let k = 0; k < 10_000; k++) {
      yield LIST_PAUSE;
      if (k % 3 === 0) yield { k };
    }
  }
  const rows = await streamed(mixed());
  const parsed = JSON.parse(rows.text) as { k: number }[];
  t.equal(parsed.length, 3334, 'every row, none of the pauses');
  t.ok(parsed.every((row, i) => row.k === i * 3), 'in order');
  t.same(JSON.parse((await streamed([{ a: 1 }, { a: 2 }])).text), [{ a: 1 }, { a: 2 }], 'a short array as it is');
});
