// HTTP calls of the dashboard. Mutations carry the bearer token kept in sessionStorage;
// on a 401 the user is asked for it (see TokenDialog) and the call is tried once more.

import type { FlowSnapshot } from "./model";

const TOKEN_KEY = "cdcsync.token";

export function storedToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function storeToken(token: string | null): void {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token is asked for again next time
  }
}

/** Set by the app: shows the token dialog and resolves with the token, or null if cancelled. */
let askToken: (rejected: boolean) => Promise<string | null> = async () => null;

export function setTokenPrompt(fn: (rejected: boolean) => Promise<string | null>): void {
  askToken = fn;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function errorOf(resp: Response): Promise<ApiError> {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = (await resp.json()) as { error?: string };
    if (body.error) message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(resp.status, message);
}

/** POST with the stored token; asks for a token on 401 (twice at most). */
export async function post<T>(path: string): Promise<T> {
  let rejected = false;
  for (let attempt = 0; attempt < 3; attempt++) {
    const token = storedToken();
    const headers: Record<string, string> = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(path, { method: "POST", headers });
    if (resp.status === 401 && attempt < 2) {
      const given = await askToken(rejected || token !== null);
      if (given === null) throw new ApiError(401, "a token is needed for this action");
      storeToken(given);
      rejected = true;
      continue;
    }
    if (!resp.ok) {
      if (resp.status === 401) storeToken(null);
      throw await errorOf(resp);
    }
    return (await resp.json()) as T;
  }
  throw new ApiError(401, "token rejected");
}

export async function getJson<T>(path: string): Promise<T> {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  if (!resp.ok) throw await errorOf(resp);
  return (await resp.json()) as T;
}

export interface FlowView {
  name: string;
  state: FlowSnapshot;
  paused: boolean;
  [key: string]: unknown;
}

export interface DeadLetter {
  id?: number;
  flow: string;
  destination: string;
  subject?: string;
  stream_seq?: number;
  table?: string | null;
  error?: string;
  reason?: string; // `error` with what varies per event masked as "…" (the group it is in)
  failed_at?: string;
  payload?: string;
  payload_bytes?: number;
  unavailable?: string; // the destination could not be read
}

export const pauseFlow = (name: string) =>
  post<FlowView>(`/api/flows/${encodeURIComponent(name)}/pause`);
export const resumeFlow = (name: string) =>
  post<FlowView>(`/api/flows/${encodeURIComponent(name)}/resume`);
export const resetCounters = () => post<unknown>("/api/stats/reset");

/** One page of a flow's dead letters, newest first; only one reason's when `reason` is set. */
export function deadLetters(
  flow: string,
  page: { limit: number; offset: number; reason?: string | null },
): Promise<{ dead_letters: DeadLetter[] }> {
  const query = new URLSearchParams({
    flow,
    limit: String(page.limit),
    offset: String(page.offset),
  });
  if (page.reason) query.set("reason", page.reason);
  return getJson(`/api/dead-letters?${query}`);
}

/** A reason (masked error text) and how many of the flow's dead letters have it. */
export interface ReasonGroup {
  reason: string;
  count: number;
  example: string; // the raw error of the group's newest letter
  table: string | null;
  last_failed_at: string;
  destinations: { flow: string; destination: string; count: number }[];
}

export interface Reasons {
  total: number; // every dead letter of the flow
  grouped: number; // the newest ones the groups were formed from (at most 10,000 each)
  distinct: number; // groups, of which `reasons` holds the commonest
  reasons: ReasonGroup[];
  unavailable: DeadLetter[]; // destinations that could not be read
}

export const deadLetterReasons = (flow: string, limit = 20) =>
  getJson<Reasons>(`/api/dead-letters/reasons?flow=${encodeURIComponent(flow)}&limit=${limit}`);
