import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ApiError, pauseFlow, setTokenPrompt, storedToken } from "./api";

// A server that wants token "right": 401 otherwise, like cdcsync with api.token set.
function server(calls: (string | null)[]) {
  return vi.fn(async (_url: string, init?: RequestInit) => {
    const auth = (init?.headers as Record<string, string> | undefined)?.Authorization ?? null;
    calls.push(auth);
    if (auth !== "Bearer right") {
      return new Response(JSON.stringify({ error: "missing or wrong bearer token" }), {
        status: 401,
      });
    }
    return new Response(JSON.stringify({ name: "users", paused: true, state: {} }), {
      status: 200,
    });
  });
}

beforeEach(() => {
  const store = new Map<string, string>();
  vi.stubGlobal("sessionStorage", {
    getItem: (k: string) => store.get(k) ?? null,
    setItem: (k: string, v: string) => store.set(k, v),
    removeItem: (k: string) => store.delete(k),
  });
});

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("post with a bearer token", () => {
  it("asks for the token on 401, retries, and keeps it for the next call", async () => {
    const calls: (string | null)[] = [];
    vi.stubGlobal("fetch", server(calls));
    const asked: boolean[] = [];
    setTokenPrompt(async (rejected) => {
      asked.push(rejected);
      return "right";
    });
    expect((await pauseFlow("users")).paused).toBe(true);
    expect(calls).toEqual([null, "Bearer right"]);
    expect(storedToken()).toBe("right");
    await pauseFlow("users");
    expect(asked).toEqual([false]); // not asked again
  });

  it("says the token was rejected when the user gives a wrong one", async () => {
    const calls: (string | null)[] = [];
    vi.stubGlobal("fetch", server(calls));
    const answers = ["wrong", "right"];
    const asked: boolean[] = [];
    setTokenPrompt(async (rejected) => {
      asked.push(rejected);
      return answers.shift() ?? null;
    });
    await pauseFlow("users");
    expect(asked).toEqual([false, true]);
    expect(calls).toEqual([null, "Bearer wrong", "Bearer right"]);
  });

  it("fails with the server's message when the user cancels", async () => {
    vi.stubGlobal("fetch", server([]));
    setTokenPrompt(async () => null);
    await expect(pauseFlow("users")).rejects.toBeInstanceOf(ApiError);
    expect(storedToken()).toBeNull();
  });
});
