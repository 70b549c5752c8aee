// Small shared pieces: status badge, client-side link, stat tile, pause/resume button,
// and the token dialog.

import { type FormEvent, type ReactNode, useContext, useEffect, useRef, useState } from "react";
import { ApiError, pauseFlow, resumeFlow } from "./api";
import { NavContext, NoticeContext } from "./context";
import { statusTone } from "./model";

export function Badge({ status, testId }: { status: string; testId?: string }) {
  return (
    <span className={`badge tone-${statusTone(status)}`} data-testid={testId} data-status={status}>
      {status}
    </span>
  );
}

export function Link({
  to,
  children,
  className,
  testId,
}: {
  to: string;
  children: ReactNode;
  className?: string;
  testId?: string;
}) {
  const go = useContext(NavContext);
  return (
    <a
      href={to}
      className={className}
      data-testid={testId}
      onClick={(e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        go(to);
      }}
    >
      {children}
    </a>
  );
}

export function Stat({
  label,
  value,
  testId,
  hint,
  tone,
}: {
  label: string;
  value: ReactNode;
  testId?: string;
  hint?: string;
  tone?: "bad" | "warn";
}) {
  return (
    <div className={`stat${tone ? ` stat-${tone}` : ""}`} title={hint}>
      <div className="stat-label">{label}</div>
      <div className="stat-value" data-testid={testId}>
        {value}
      </div>
    </div>
  );
}

/**
 * Pause or resume a flow. What it shows follows the server (`paused` in each snapshot);
 * while a request is in flight it is disabled.
 */
export function PauseButton({
  flow,
  paused,
  testId,
  compact,
}: {
  flow: string;
  paused: boolean;
  testId?: string;
  compact?: boolean;
}) {
  const notify = useContext(NoticeContext);
  const [busy, setBusy] = useState(false);
  const [shown, setShown] = useState<boolean | null>(null); // the answer of our own request
  useEffect(() => setShown(null), [paused]);
  const isPaused = shown ?? paused;
  const click = async () => {
    setBusy(true);
    try {
      const view = isPaused ? await resumeFlow(flow) : await pauseFlow(flow);
      setShown(view.paused);
      notify(`${view.paused ? "Paused" : "Resumed"} flow ${flow}`, "info");
    } catch (e) {
      notify(e instanceof ApiError ? e.message : String(e), "error");
    } finally {
      setBusy(false);
    }
  };
  return (
    <button
      type="button"
      className={`btn ${isPaused ? "btn-primary" : ""}${compact ? " btn-small" : ""}`}
      data-testid={testId}
      data-paused={String(isPaused)}
      disabled={busy}
      onClick={click}
    >
      {isPaused ? "▶ Resume" : "❚❚ Pause"}
    </button>
  );
}

export function TokenDialog({
  rejected,
  onDone,
}: {
  rejected: boolean;
  onDone: (token: string | null) => void;
}) {
  const [value, setValue] = useState("");
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    onDone(value.trim() || null);
  };
  return (
    <div className="modal-backdrop" role="presentation">
      <form
        className="modal"
        role="dialog"
        aria-modal="true"
        aria-labelledby="token-title"
        data-testid="token-dialog"
        onSubmit={submit}
        onKeyDown={(e) => e.key === "Escape" && onDone(null)}
      >
        <h2 id="token-title">API token needed</h2>
        <p>
          This action needs the token set as <code>api.token</code> in the cdcsync
          configuration. It is kept in this browser tab only (sessionStorage).
        </p>
        {rejected && (
          <p className="modal-error" data-testid="token-rejected">
            The server rejected the token.
          </p>
        )}
        <input
          ref={input}
          type="password"
          autoComplete="off"
          placeholder="Bearer token"
          aria-label="API token"
          data-testid="token-input"
          value={value}
          onChange={(e) => setValue(e.target.value)}
        />
        <div className="modal-actions">
          <button type="button" className="btn" onClick={() => onDone(null)}>
            Cancel
          </button>
          <button type="submit" className="btn btn-primary" data-testid="token-submit">
            Continue
          </button>
        </div>
      </form>
    </div>
  );
}
