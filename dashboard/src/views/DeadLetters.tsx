import { useCallback, useEffect, useRef, useState } from "react";
import { type DeadLetter, type Reasons, deadLetterReasons, deadLetters } from "../api";
import {
  PAGE_SIZE,
  REASONS_SHOWN,
  destinationsText,
  dlqCommands,
  formatFailedAt,
  pageRequest,
  pageView,
  reasonShare,
  reasonsCaption,
  reloadDelay,
} from "../deadLetters";
import { formatCount } from "../model";

/**
 * The flow's dead letters in a bounded card: the reasons with their counts (click one to
 * see only its letters), ten letters a page, and the `cdcsync dlq` commands for the rest.
 * Reloads when the flow's dead-letter count changes, at most every few seconds.
 */
export function DeadLetters({ flow, count }: { flow: string; count: number }) {
  const [reasons, setReasons] = useState<Reasons | null>(null);
  // The letters with the offset and reason they were asked for: the pager describes what
  // is on screen, not a request still in flight.
  const [page, setPage] = useState<{
    offset: number;
    reason: string | null;
    letters: DeadLetter[];
  } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [reason, setReason] = useState<string | null>(null);
  const [offset, setOffset] = useState(0);
  const [allReasons, setAllReasons] = useState(false);
  const asked = useRef(0); // answers to older requests are dropped
  const changes = useThrottled(count);

  const load = useCallback(async () => {
    const id = ++asked.current;
    try {
      const [r, p] = await Promise.all([
        deadLetterReasons(flow),
        deadLetters(flow, { ...pageRequest(offset), reason }),
      ]);
      if (id !== asked.current) return;
      setReasons(r);
      setPage({ offset, reason, letters: p.dead_letters });
      setError(null);
    } catch (e) {
      if (id === asked.current) setError(e instanceof Error ? e.message : String(e));
    }
  }, [flow, offset, reason]);

  useEffect(() => {
    void load();
  }, [load, changes]);

  const choose = (next: string | null) => {
    setReason(next);
    setOffset(0);
  };
  const at = page?.offset ?? 0;
  const only = page?.reason ?? null;
  const group = only === null ? null : reasons?.reasons.find((g) => g.reason === only);
  const total = only === null ? (reasons?.total ?? null) : (group?.count ?? null);
  const letters = page?.letters ?? null;
  const unavailable = [
    ...(reasons?.unavailable ?? []),
    ...(letters ?? []).filter((d) => d.unavailable),
  ];
  const rows = (letters ?? []).filter((d) => !d.unavailable);
  const view = pageView(at, rows.length, total);
  const groups = reasons?.reasons ?? [];
  const shownGroups = allReasons ? groups : groups.slice(0, REASONS_SHOWN);
  const commands = dlqCommands(flow, reasons?.total ?? count);

  return (
    <section className="card" data-testid="dead-letters">
      <div className="card-head">
        <h2>
          Dead letters
          {reasons && reasons.total > 0 && (
            <span className="unit" data-testid="dead-letters-caption">
              {reasonsCaption(reasons)}
            </span>
          )}
        </h2>
        <button type="button" className="btn btn-small btn-ghost" onClick={() => void load()}>
          Refresh
        </button>
      </div>
      {error && <p className="problem">Could not load dead letters: {error}</p>}
      {unavailable.map((d) => (
        <p key={`${d.flow}/${d.destination}`} className="problem" data-testid="dead-letters-unavailable">
          {d.destination}: cannot read dead letters: {d.unavailable}
        </p>
      ))}
      {letters === null && !error && <p className="muted">Loading…</p>}
      {reasons !== null && reasons.total === 0 && rows.length === 0 && (
        <p className="muted" data-testid="dead-letters-empty">
          No dead letters.
        </p>
      )}

      {groups.length > 0 && (
        <>
          <h3 className="subhead">By reason</h3>
          <ul className="reasons" aria-label="dead letters by reason">
            {shownGroups.map((g) => {
              const where = destinationsText(g);
              const selected = g.reason === reason;
              return (
                <li key={g.reason}>
                  <button
                    type="button"
                    className={`reason${selected ? " reason-selected" : ""}`}
                    aria-pressed={selected}
                    title={`${g.example}\n\nClick to list only these letters`}
                    data-testid="dead-letter-reason"
                    onClick={() => choose(selected ? null : g.reason)}
                  >
                    <span className="reason-count" data-testid="dead-letter-reason-count">
                      {formatCount(g.count)}
                    </span>
                    <span className="reason-text">
                      <span className="reason-bar" style={{ width: `${reasonShare(g.count, reasons?.grouped ?? 0)}%` }} />
                      <span className="mono">{g.reason}</span>
                    </span>
                    <span className="reason-meta muted">
                      {g.table && <span className="tag">{g.table}</span>}
                      {where && <span>{where}</span>}
                      <span>last {formatFailedAt(g.last_failed_at)}</span>
                    </span>
                  </button>
                </li>
              );
            })}
          </ul>
          {groups.length > REASONS_SHOWN && (
            <button
              type="button"
              className="btn btn-small btn-ghost"
              data-testid="dead-letter-reasons-toggle"
              onClick={() => setAllReasons(!allReasons)}
            >
              {allReasons ? "Show the commonest only" : `Show all ${groups.length} reasons`}
            </button>
          )}
          {(reasons?.distinct ?? 0) > groups.length && (
            <p className="muted small">
              {formatCount((reasons?.distinct ?? 0) - groups.length)} rarer reasons are not listed
              here; <code>cdcsync dlq list</code> shows every letter.
            </p>
          )}
        </>
      )}

      {rows.length > 0 && (
        <>
          <div className="pager">
            <h3 className="subhead">
              {only === null ? "Newest first" : "Newest first, this reason only"}
            </h3>
            {only !== null && (
              <button
                type="button"
                className="btn btn-small"
                data-testid="dead-letters-all"
                onClick={() => choose(null)}
              >
                All reasons ✕
              </button>
            )}
            <span className="pager-range" data-testid="dead-letters-range">
              {view.label}
            </span>
            <button
              type="button"
              className="btn btn-small"
              data-testid="dead-letters-newer"
              disabled={!view.hasNewer}
              onClick={() => setOffset(Math.max(0, at - PAGE_SIZE))}
            >
              ← Newer
            </button>
            <button
              type="button"
              className="btn btn-small"
              data-testid="dead-letters-older"
              disabled={!view.hasOlder}
              onClick={() => setOffset(at + PAGE_SIZE)}
            >
              Older →
            </button>
          </div>
          <ul className="letters">
            {rows.slice(0, PAGE_SIZE).map((d) => (
              <Letter key={`${d.destination}-${d.id}`} letter={d} />
            ))}
          </ul>
          {view.beyondWindow && (
            <p className="muted small">The dashboard pages through the newest 1,000.</p>
          )}
        </>
      )}

      {(reasons?.total ?? 0) > 0 && (
        <div className="dlq-hint" data-testid="dlq-command">
          <span className="muted">Every letter, whole payloads:</span>{" "}
          <code>{commands.list} --payload</code>
          <span className="muted"> · after fixing the cause:</span> <code>{commands.replay}</code>
          <span className="muted"> (run where the configuration is, or add -c PATH)</span>
        </div>
      )}
    </section>
  );
}

/** One dead letter as a single line; the payload and the whole text unfold. */
function Letter({ letter: d }: { letter: DeadLetter }) {
  return (
    <li className="letter" data-testid="dead-letter">
      <details>
        <summary className="letter-line">
          <span className="mono letter-seq" data-testid="dead-letter-seq">
            #{d.stream_seq}
          </span>
          <span className="muted letter-time" title={d.failed_at}>
            {formatFailedAt(d.failed_at)}
          </span>
          <span className="letter-error" data-testid="dead-letter-error" title={d.error}>
            {d.destination}: {d.error}
          </span>
        </summary>
        <div className="letter-body">
          <div className="letter-head">
            <span className="mono letter-subject">{d.subject}</span>
            {d.table && <span className="tag">{d.table}</span>}
            <span className="muted">{formatCount(d.payload_bytes ?? 0)} bytes</span>
          </div>
          <div className="letter-full">{d.error}</div>
          <pre className="payload">{d.payload}</pre>
        </div>
      </details>
    </li>
  );
}

/** `value`, changing at most every RELOAD_GAP_MS (the first change at once). */
function useThrottled<T>(value: T): T {
  const [shown, setShown] = useState(value);
  const lastAt = useRef<number | null>(null);
  useEffect(() => {
    if (Object.is(value, shown)) return;
    const t = setTimeout(
      () => {
        lastAt.current = Date.now();
        setShown(value);
      },
      reloadDelay(Date.now(), lastAt.current),
    );
    return () => clearTimeout(t);
  }, [value, shown]);
  return shown;
}
