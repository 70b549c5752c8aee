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
export const deadLetters = (flow: string, limit = 50) =>
  getJson<{ dead_letters: DeadLetter[] }>(
    `/api/dead-letters?flow=${encodeURIComponent(flow)}&limit=${limit}`,
  );
