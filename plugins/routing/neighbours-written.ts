// The static neighbours the routing stage wrote into each neighbour table, by table. In a
// module of their own, not the plugin's entry module: a reload of changed plugin files
// imports the entry anew, and a new version of it with no record would leave the entries
// written before STATIC for good (never aged, never taken out).
import type { NeighbourConfig } from './config.ts';

/** Neighbours written as STATIC entries, by `${iface} ${address}`. */
export type Written = Map<string, { iface: number; n: NeighbourConfig }>;

/** By neighbour table: the config's neighbours, and those route sources learned. */
export const staticsWritten = new WeakMap<ArrayBufferLike, Written>();
export const learnedWritten = new WeakMap<ArrayBufferLike, Written>();
