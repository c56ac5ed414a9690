// Node's Buffer.prototype.copy, for a frame's bytes between two views: a memmove in C++
// given the two views and small-integer offsets (V8's fast API call). libc's memcpy through
// koffi takes two addresses instead, each past 2^31 a heap number: 32 bytes of garbage a
// copy, which in a PMD whose caches frames fill cost about as much as the copy
// (bench/HISTORY.md). Called as nativeCopy.call(source, target, targetStart, sourceStart,
// sourceEnd); it copies less, never outside either view, where a range is past one's end,
// and as memmove where the two overlap (Node's documentation).
export const nativeCopy = Buffer.prototype.copy;
