import { type ReactElement, useCallback, useEffect, useRef, useState } from "react";
import { ApiError, resetCounters, setTokenPrompt } from "./api";
import { TokenDialog } from "./components";
import { NavContext, NoticeContext, type NoticeKind } from "./context";
import { formatDuration } from "./model";
import { useDarkMode, useLive, usePath } from "./stream";
import { FlowPage } from "./views/FlowPage";
import { Overview } from "./views/Overview";

interface Notice {
  id: number;
  text: string;
  kind: NoticeKind;
}

export function App() {
  const live = useLive();
  const dark = useDarkMode();
  const [path, go] = usePath();
  const [notice, setNotice] = useState<Notice | null>(null);
  const [tokenAsk, setTokenAsk] = useState<{
    rejected: boolean;
    resolve: (t: string | null) => void;
  } | null>(null);
  const noticeId = useRef(0);

  const notify = useCallback((text: string, kind: NoticeKind) => {
    noticeId.current += 1;
    setNotice({ id: noticeId.current, text, kind });
  }, []);

  useEffect(() => {
    if (!notice) return;
    const t = setTimeout(() => setNotice(null), notice.kind === "error" ? 8000 : 3000);
    return () => clearTimeout(t);
  }, [notice]);

  useEffect(() => {
    setTokenPrompt(
      (rejected) => new Promise<string | null>((resolve) => setTokenAsk({ rejected, resolve })),
    );
  }, []);

  const reset = async () => {
    try {
      await resetCounters();
      notify("Counters reset", "info");
    } catch (e) {
      notify(e instanceof ApiError ? e.message : String(e), "error");
    }
  };

  const snapshot = live.snapshot;
  const flowMatch = /^\/flows\/([^/]+)\/?$/.exec(path);
  let page: ReactElement;
  if (flowMatch) {
    const name = decodeURIComponent(flowMatch[1]);
    page = (
      <FlowPage
        name={name}
        flow={snapshot?.flows.find((f) => f.name === name)}
        history={live.history}
        tick={live.tick}
        dark={dark}
      />
    );
  } else if (path === "/" || path === "") {
    page = <Overview snapshot={snapshot} history={live.history} tick={live.tick} dark={dark} />;
  } else {
    page = (
      <div className="card">
        <h2>Nothing at {path}</h2>
        <p>
          <a href="/">Back to the overview</a>
        </p>
      </div>
    );
  }

  return (
    <NavContext.Provider value={go}>
      <NoticeContext.Provider value={notify}>
        <header className="topbar">
          <a
            href="/"
            className="brand"
            onClick={(e) => {
              e.preventDefault();
              go("/");
            }}
          >
            <span className="brand-dot" aria-hidden="true" />
            cdcsync
          </a>
          <span className="topbar-meta" data-testid="server-meta">
            {snapshot ? `v${snapshot.version} · up ${formatDuration(snapshot.uptime_s)}` : ""}
          </span>
          <span className={`link link-${live.link}`} data-testid="link-state" data-state={live.link}>
            {live.link === "live" ? "live" : live.link === "lost" ? "offline" : "connecting"}
          </span>
          <button type="button" className="btn btn-small" data-testid="reset-counters" onClick={reset}>
            Reset counters
          </button>
        </header>
        {live.link === "lost" && (
          <div className="banner" role="alert" data-testid="connection-banner">
            Lost the connection to cdcsync. Reconnecting by itself; the figures below are the
            last ones received.
          </div>
        )}
        <main className={live.link === "lost" ? "stale" : ""}>{page}</main>
        {notice && (
          <div
            key={notice.id}
            className={`notice notice-${notice.kind}`}
            role="status"
            data-testid={notice.kind === "error" ? "action-error" : "action-notice"}
          >
            {notice.text}
          </div>
        )}
        {tokenAsk && (
          <TokenDialog
            rejected={tokenAsk.rejected}
            onDone={(token) => {
              tokenAsk.resolve(token);
              setTokenAsk(null);
            }}
          />
        )}
      </NoticeContext.Provider>
    </NavContext.Provider>
  );
}
