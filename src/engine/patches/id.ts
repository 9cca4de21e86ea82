// Patch ids: short, unique, and sorting as text in creation order. 9 base-36 digits of milliseconds since
// 1970 (enough until the year 5188) then 4 random base-36 digits; within one process the time part never
// repeats or goes back, so ids made in a burst still sort in order.
import { randomInt } from 'node:crypto';

let last = 0;

export function newPatchId(now: number = Date.now()): string {
  last = Math.max(now, last + 1);
  const rand = randomInt(36 ** 4).toString(36).padStart(4, '0');
  return `${last.toString(36).padStart(9, '0')}${rand}`;
}

/** ISO 8601 time with milliseconds, UTC: what `createdAt` holds. */
export function isoNow(now: number = Date.now()): string {
  return new Date(now).toISOString();
}
