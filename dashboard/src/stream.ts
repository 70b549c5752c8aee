// The live connection: one EventSource on /api/stream (one snapshot per second, never
// polling), a watchdog that notices a silent stream, and reconnection with back-off.

import { useEffect, useRef, useState } from "react";
import {
  type LinkState,
  RECONNECT_AFTER_MS,
  linkState,
  reconnectDelayMs,
} from "./connection";
import { getJson } from "./api";
import { History, type HistorySnapshot, type StatsSnapshot, snapshotTime } from "./model";

export interface Live {
  snapshot: StatsSnapshot | null;
  history: History;
  link: LinkState;
  /** Increments with every snapshot, so memoised chart options recompute. */
  tick: number;
}

export function useLive(url = "/api/stream", historyUrl = "/api/history"): Live {
  const history = useRef(new History()).current;
  const [tick, setTick] = useState(0);
  const [link, setLink] = useState<LinkState>("connecting");

  useEffect(() => {
    let source: EventSource | null = null;
    let openedAt = Date.now();
    let lastMessageAt: number | null = null;
    let errored = false;
    let attempt = 0;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let closed = false;

    // The last minutes the server kept, so the charts do not start empty (on load) or
    // keep a hole (after a reconnect). Merged by timestamp with what the stream sends.
    const loadHistory = async () => {
      try {
        const body = await getJson<{ snapshots: HistorySnapshot[] }>(historyUrl);
        if (closed) return;
        history.seed(body.snapshots);
        setTick((t) => t + 1);
      } catch {
        // an older server without /api/history, or the server went away again
      }
    };

    const update = () => setLink(linkState(Date.now(), openedAt, lastMessageAt, errored));

    const open = () => {
      clearTimeout(retry);
      source?.close();
      openedAt = Date.now();
      const es = new EventSource(url);
      source = es;
      // Fires on the first connection and on every reconnect, the browser's own included.
      es.onopen = () => void loadHistory();
      es.onmessage = (ev: MessageEvent<string>) => {
        let snapshot: StatsSnapshot;
        try {
          snapshot = JSON.parse(ev.data) as StatsSnapshot;
        } catch {
          return;
        }
        lastMessageAt = Date.now();
        errored = false;
        attempt = 0;
        history.push(snapshot, snapshotTime(snapshot, lastMessageAt));
        setTick((t) => t + 1);
        update();
      };
      es.onerror = () => {
        errored = true;
        update();
        // The browser retries by itself while the state is CONNECTING; a CLOSED source
        // (an HTTP error, a wrong content type) is ours to reopen.
        if (es.readyState === EventSource.CLOSED) {
          retry = setTimeout(open, reconnectDelayMs(attempt++));
        }
      };
    };

    const watchdog = setInterval(() => {
      update();
      const now = Date.now();
      const quietFor = now - (lastMessageAt ?? openedAt);
      // A half-open connection (server frozen, network gone) errors late or never.
      if (quietFor > RECONNECT_AFTER_MS && now - openedAt > RECONNECT_AFTER_MS) open();
    }, 1000);

    open();
    return () => {
      closed = true;
      clearInterval(watchdog);
      clearTimeout(retry);
      source?.close();
    };
  }, [url, historyUrl, history]);

  return { snapshot: history.latest(), history, link, tick };
}

/** Tracks prefers-color-scheme so canvas charts can pick matching colours. */
export function useDarkMode(): boolean {
  const query = "(prefers-color-scheme: dark)";
  const [dark, setDark] = useState(() => window.matchMedia?.(query).matches ?? false);
  useEffect(() => {
    const mq = window.matchMedia?.(query);
    if (!mq) return;
    const on = (e: MediaQueryListEvent) => setDark(e.matches);
    mq.addEventListener("change", on);
    return () => mq.removeEventListener("change", on);
  }, []);
  return dark;
}

/** The client-side route: the path, and a function to go elsewhere without reloading. */
export function usePath(): [string, (to: string) => void] {
  const [path, setPath] = useState(window.location.pathname);
  useEffect(() => {
    const on = () => setPath(window.location.pathname);
    window.addEventListener("popstate", on);
    return () => window.removeEventListener("popstate", on);
  }, []);
  const go = (to: string) => {
    if (to === window.location.pathname) return;
    window.history.pushState(null, "", to);
    setPath(to);
    window.scrollTo(0, 0);
  };
  return [path, go];
}
