// The flow page's dead-letter card without the DOM: which page to ask for, what the pager
// says, the `cdcsync dlq` commands for everything the card does not show, and how often it
// reloads while letters keep coming. Unit-tested with Vitest.

import type { ReasonGroup, Reasons } from "./api";
import { formatCount } from "./model";

/** Letters per page: ten compact rows keep the flow page short whatever piled up. */
export const PAGE_SIZE = 10;
/** GET /api/dead-letters pages through the newest 1,000 (offset + limit); `cdcsync dlq` the rest. */
export const WINDOW = 1000;
/** Reasons shown before "show all": the commonest ones. */
export const REASONS_SHOWN = 6;
/** While the dead-letter count keeps changing, reload at most this often. */
export const RELOAD_GAP_MS = 5000;

/** What to ask for the page at `offset`: one letter more than shown says an older page exists. */
export function pageRequest(offset: number, size = PAGE_SIZE): { limit: number; offset: number } {
  return { offset, limit: Math.max(1, Math.min(size + 1, WINDOW - offset)) };
}

export interface PageView {
  shown: number; // letters on this page
  label: string; // "11–20 of 80"
  hasNewer: boolean;
  hasOlder: boolean;
  /** More letters exist than the dashboard pages through: only `cdcsync dlq` shows them. */
  beyondWindow: boolean;
}

/**
 * The pager of a page at `offset` for which the server returned `received` letters (asked
 * with pageRequest). `total` is how many there are (from the reasons, null while unknown);
 * it was counted at another moment, so it never shows fewer than this page proves.
 */
export function pageView(
  offset: number,
  received: number,
  total: number | null,
  size = PAGE_SIZE,
): PageView {
  const shown = Math.min(received, size);
  const last = offset + shown;
  const more = received > size;
  const known = total === null ? null : Math.max(total, last + (more ? 1 : 0));
  const of = known === null ? (more ? `${formatCount(last)}+` : formatCount(last)) : formatCount(known);
  return {
    shown,
    label: shown === 0 ? `none of ${of}` : `${formatCount(offset + 1)}–${formatCount(last)} of ${of}`,
    hasNewer: offset > 0,
    hasOlder: more && last < WINDOW,
    beyondWindow: (more || (known ?? 0) > last) && last >= WINDOW,
  };
}

/** A word as a POSIX shell reads it literally: bare when safe, else in single quotes. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_.,:+@%/=-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The command lines for what the card does not show: every letter, and replaying them. */
export function dlqCommands(flow: string, total: number): { list: string; replay: string } {
  const f = shellQuote(flow);
  return {
    list: `cdcsync dlq list --flow ${f} --limit ${Math.max(total, 1)}`,
    replay: `cdcsync dlq replay --flow ${f} --all`,
  };
}

/** "80 dead letters · 4 reasons", and what the grouping covered when not all of them. */
export function reasonsCaption(r: Reasons): string {
  const letters = `${formatCount(r.total)} dead letter${r.total === 1 ? "" : "s"}`;
  const reasons = `${formatCount(r.distinct)} reason${r.distinct === 1 ? "" : "s"}`;
  const partial = r.grouped < r.total ? ` among the newest ${formatCount(r.grouped)}` : "";
  return `${letters} · ${reasons}${partial}`;
}

/** Where a reason's letters are, when that is worth saying: the flow has several destinations. */
export function destinationsText(group: ReasonGroup): string | null {
  if (group.destinations.length < 2) return null;
  return group.destinations.map((d) => `${d.destination} ${formatCount(d.count)}`).join(" · ");
}

/** The width of a reason's bar, percent of the grouped letters (a visible sliver at least). */
export function reasonShare(count: number, grouped: number): number {
  if (!(grouped > 0) || count <= 0) return 0;
  return Math.max(1, Math.min(100, Math.round((100 * count) / grouped)));
}

/** A letter's time: the clock time when it is today, else the date too (local time). */
export function formatFailedAt(iso: string | undefined, now: Date = new Date()): string {
  if (!iso) return "–";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return iso;
  const pad = (n: number) => String(n).padStart(2, "0");
  const time = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  if (t.toDateString() === now.toDateString()) return time;
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${time}`;
}

/** Milliseconds to wait before the next reload: none for the first, else RELOAD_GAP_MS apart. */
export function reloadDelay(now: number, lastAt: number | null, gap = RELOAD_GAP_MS): number {
  return lastAt === null ? 0 : Math.max(0, lastAt + gap - now);
}
