// Pure rules for the live connection, kept apart from the React hook so they are testable.

/** No snapshot for this long (the server sends one per second): show the banner. */
export const STALE_MS = 3500;

/** After this long without a snapshot, drop the EventSource and open a new one. */
export const RECONNECT_AFTER_MS = 6000;

/** Delay before reconnect attempt `attempt` (0-based): 0.5 s doubling up to 5 s. */
export function reconnectDelayMs(attempt: number): number {
  return Math.min(500 * 2 ** Math.max(0, attempt), 5000);
}

export type LinkState = "connecting" | "live" | "lost";

/**
 * The banner's state: `connecting` before the first snapshot (for a short grace period),
 * `live` while snapshots arrive, `lost` once they stopped or the stream errored.
 */
export function linkState(
  now: number,
  openedAt: number,
  lastMessageAt: number | null,
  errored: boolean,
): LinkState {
  if (lastMessageAt === null) {
    return errored || now - openedAt > STALE_MS ? "lost" : "connecting";
  }
  if (errored || now - lastMessageAt > STALE_MS) return "lost";
  return "live";
}
