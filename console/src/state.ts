// The console's client-side logic that is not drawing: pure functions, unit-tested
// (state.test.ts). Nothing here talks to the network or the DOM.

/** A workspace's status, as the API reports it (`WorkspaceStatus`). */
export type WorkspaceStatus = "creating" | "starting" | "running" | "stopping" | "stopped" | "failed" | "deleting";

/** Statuses that change on their own: the list keeps polling fast while one is shown. */
export function isTransient(status: string): boolean {
  return status === "creating" || status === "starting" || status === "stopping" || status === "deleting";
}

/** The steps a new workspace goes through, and how far `status` is along them. */
export const CREATE_STEPS = ["creating", "starting", "running"] as const;

/**
 * `left`: the workspace has moved on from its creation (stopped, deleting, ...): the progress
 * is no longer shown.
 */
export function progress(status: string): { step: number; of: number; done: boolean; failed: boolean; left: boolean } {
  const of = CREATE_STEPS.length;
  if (status === "failed") return { step: 0, of, done: true, failed: true, left: false };
  const i = CREATE_STEPS.indexOf(status as (typeof CREATE_STEPS)[number]);
  if (i < 0) return { step: 0, of, done: false, failed: false, left: true };
  return { step: i + 1, of, done: status === "running", failed: false, left: false };
}

/** Which actions a workspace in `status` (wanting `desired`) offers. */
export function actions(status: string, desired: string): { start: boolean; stop: boolean; open: boolean } {
  return {
    start: (status === "stopped" || status === "failed") && desired !== "deleted",
    stop: (status === "running" || status === "starting" || status === "creating") && desired === "running",
    open: status === "running",
  };
}

/** At most this many ports per workspace (the API's limit). */
export const MAX_PORTS = 5;

/** Check a port typed into the form against the ports already registered: the error, or the port. */
export function checkPort(text: string, registered: number[]): { port: number } | { error: string } {
  const t = text.trim();
  if (!/^[0-9]{1,5}$/.test(t)) return { error: "a port is a number from 1 to 65535" };
  const port = Number(t);
  if (port < 1 || port > 65535) return { error: "a port is a number from 1 to 65535" };
  if (registered.includes(port)) return { error: `port ${port} is already registered` };
  if (registered.length >= MAX_PORTS) return { error: `at most ${MAX_PORTS} ports per workspace: remove one first` };
  return { port };
}

/** The workspace a `capacity_exhausted` message tells to stop (`vt workspace stop NAME`), if any. */
export function workspaceToStop(message: string): string | null {
  const m = /`vt workspace stop ([a-z0-9][a-z0-9-]*)`/.exec(message);
  return m ? m[1] : null;
}

/** A number typed into the create form: empty means the server's default. */
export function optionalInt(text: string, field: string, min: number, max: number): number | null {
  const t = text.trim();
  if (t === "") return null;
  if (!/^[0-9]+$/.test(t)) throw new Error(`${field}: a whole number from ${min} to ${max}`);
  const n = Number(t);
  if (n < min || n > max) throw new Error(`${field}: a whole number from ${min} to ${max}`);
  return n;
}

/** An RFC 3339 time (the API's, UTC) in the browser's local time zone: `2026-11-26 04:05:06`. */
export function localTime(iso: string | null | undefined, tz?: string): string {
  if (!iso) return "never";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: tz,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  }).formatToParts(d);
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? "";
  return `${get("year")}-${get("month")}-${get("day")} ${get("hour")}:${get("minute")}:${get("second")}`;
}

/** Milliseconds as people read them: `850 ms`, `4.2 s`, `3 min 5 s`. */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** Memory in MiB as people read it. */
export function mib(n: number): string {
  return n >= 1024 && n % 1024 === 0 ? `${n / 1024} GiB` : `${n} MiB`;
}

/**
 * Splits a byte stream's text into whole lines: `push` returns the lines a chunk completed
 * and keeps the unfinished rest for the next chunk (a line can span chunks).
 */
export class LineBuffer {
  private rest = "";

  push(chunk: string): string[] {
    const text = this.rest + chunk;
    const lines = text.split("\n");
    this.rest = lines.pop() ?? "";
    return lines.map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
  }

  /** What is left when the stream ends (a last line without a newline). */
  end(): string[] {
    const rest = this.rest;
    this.rest = "";
    return rest === "" ? [] : [rest];
  }
}

/** One line of `GET /v1/instances/{id}/logs`: `<RFC3339 time> <stdout|stderr> <text>`. */
export interface LogLine {
  at: string | null;
  stream: string;
  text: string;
}

export function parseLogLine(line: string): LogLine {
  const m = /^(\S+) (stdout|stderr) ?(.*)$/s.exec(line);
  if (!m || Number.isNaN(new Date(m[1]).getTime())) return { at: null, stream: "", text: line };
  return { at: m[1], stream: m[2], text: m[3] };
}

/** Keep the newest `max` items of a growing list (logs, events) so a long follow stays small. */
export function keepLast<T>(items: T[], more: T[], max: number): T[] {
  const all = items.concat(more);
  return all.length > max ? all.slice(all.length - max) : all;
}

/** The deploy phases in their order, each with when it was reached (or not yet). */
export const DEPLOY_PHASES = ["scheduled", "image_ready", "booted", "healthy"] as const;

export function phaseRows(
  phases: { phase: string; at: string; after_ms: number }[],
): { phase: string; reached: boolean; after_ms: number | null; at: string | null }[] {
  return DEPLOY_PHASES.map((phase) => {
    const p = phases.find((x) => x.phase === phase);
    return { phase, reached: !!p, after_ms: p ? p.after_ms : null, at: p ? p.at : null };
  });
}

/** The console's routes (paths under /app/), parsed; unknown paths are `not_found`. */
export type Route =
  | { page: "workspaces" }
  | { page: "orgs" }
  | { page: "org"; org: string }
  | { page: "app"; org: string; app: string }
  | { page: "env"; org: string; app: string; env: string }
  | { page: "events"; org: string }
  | { page: "not_found"; path: string };

export const BASE = "/app/";

export function parseRoute(pathname: string): Route {
  const rest = pathname.startsWith(BASE) ? pathname.slice(BASE.length) : pathname === "/app" ? "" : null;
  if (rest === null) return { page: "not_found", path: pathname };
  let seg: string[];
  try {
    seg = rest.split("/").filter((s) => s !== "").map(decodeURIComponent);
  } catch {
    return { page: "not_found", path: pathname };
  }
  const name = (s: string) => /^[a-z0-9][a-z0-9-]{0,62}$/.test(s);
  if (!seg.every(name)) return { page: "not_found", path: pathname };
  if (seg.length === 0 || (seg.length === 1 && seg[0] === "workspaces")) return { page: "workspaces" };
  if (seg[0] !== "orgs") return { page: "not_found", path: pathname };
  if (seg.length === 1) return { page: "orgs" };
  if (seg.length === 2) return { page: "org", org: seg[1] };
  if (seg.length === 3 && seg[2] === "events") return { page: "events", org: seg[1] };
  if (seg.length === 4 && seg[2] === "apps") return { page: "app", org: seg[1], app: seg[3] };
  if (seg.length === 6 && seg[2] === "apps" && seg[4] === "envs") {
    return { page: "env", org: seg[1], app: seg[3], env: seg[5] };
  }
  return { page: "not_found", path: pathname };
}

export function routePath(r: Route): string {
  switch (r.page) {
    case "workspaces":
      return `${BASE}workspaces`;
    case "orgs":
      return `${BASE}orgs`;
    case "org":
      return `${BASE}orgs/${r.org}`;
    case "events":
      return `${BASE}orgs/${r.org}/events`;
    case "app":
      return `${BASE}orgs/${r.org}/apps/${r.app}`;
    case "env":
      return `${BASE}orgs/${r.org}/apps/${r.app}/envs/${r.env}`;
    case "not_found":
      return r.path;
  }
}
