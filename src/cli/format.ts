// Text for people: aligned tables (numbers right-aligned, with thousands separators), rates
// and bit rates, and one value of any JSON shape on one line.

export type Cell = string | number | null;

// Made at first use: making it loads ICU's locale data, about 30 ms of vrouterctl's start
// here, which most commands' output never needs.
let grouped: Intl.NumberFormat | null = null;

/** 1234567 -> "1,234,567"; null (not known) -> "-". */
export function count(n: number | null): string {
  if (n === null) return '-';
  grouped ??= new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  return grouped.format(n);
}

/** Bits per second in SI units, three digits: "0", "950 bit/s", "12.3 Mbit/s". */
export function bitRate(bitsPerSecond: number | null): string {
  if (bitsPerSecond === null) return '-';
  if (bitsPerSecond < 0.5) return '0';
  const units = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'];
  let value = bitsPerSecond;
  let unit = 0;
  while (value >= 999.5 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? Math.round(value) : value.toPrecision(3)} ${units[unit]}`;
}

/** A value as one short line: strings bare, null as "-", lists comma-separated, objects as JSON. */
export function inline(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return count(value);
  if (Array.isArray(value)) return value.length === 0 ? '-' : value.map((v) => (typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v))).join(', ');
  if (typeof value === 'object') return Object.keys(value).length === 0 ? '-' : JSON.stringify(value);
  return String(value);
}

/**
 * Rows under titles, columns two spaces apart. A column whose cells are all numbers (or
 * unknown) is right-aligned and its numbers grouped, as are the columns named in
 * rightAligned (numbers with units); the rest are left-aligned as given.
 */
export function table(titles: string[], rows: Cell[][], rightAligned: number[] = []): string {
  const numeric = titles.map((_, c) => rightAligned.includes(c) || (rows.length > 0 && rows.every((r) => typeof r[c] === 'number' || r[c] === null)));
  const text = rows.map((r) => titles.map((_, c) => (typeof r[c] === 'number' ? count(r[c] as number) : r[c] === null || r[c] === undefined ? '-' : String(r[c]))));
  // A loop, not Math.max(...): a spread of a million rows (a full route table) is past V8's arguments.
  const widths = titles.map((t, c) => text.reduce((w, r) => Math.max(w, r[c].length), t.length));
  const line = (cells: string[]) =>
    cells
      .map((cell, c) => (numeric[c] ? cell.padStart(widths[c]) : c === cells.length - 1 ? cell : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd();
  return [line(titles), ...text.map(line)].join('\n');
}

/** "key  value" lines, the keys padded to one width. */
export function keyValues(pairs: [string, string][]): string {
  const width = pairs.reduce((w, [k]) => Math.max(w, k.length), 0);
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${v}`.trimEnd()).join('\n');
}
