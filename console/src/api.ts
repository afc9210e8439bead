// The public /v1 API, as the console uses it: JSON requests, the API's error body kept whole
// (code, message, request id), and line streams (logs, events) read as they come.
// Credentials: the browser's basic auth for the console user (docs/console.md); this module
// never sees or stores a password.

import { LineBuffer } from "./state";

/** An error the API answered (its `ErrorBody`), or one of the network. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId: string | null,
    readonly field: string | null = null,
  ) {
    super(message);
  }
}

async function errorOf(resp: Response): Promise<ApiError> {
  const text = await resp.text().catch(() => "");
  try {
    const e = JSON.parse(text).error;
    if (e && typeof e.message === "string") {
      return new ApiError(resp.status, e.code ?? "unknown", e.message, e.request_id ?? null, e.field ?? null);
    }
  } catch {
    // not the API's error body: shown as it came
  }
  return new ApiError(resp.status, "http", `${resp.status} ${resp.statusText}: ${text.slice(0, 200)}`,
    resp.headers.get("x-request-id"));
}

async function send(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
  let resp: Response;
  try {
    // Absolute, on this origin: a page opened as `http://user:pass@host/app/` cannot fetch
    // relative URLs (they would carry the credentials); `location.origin` has none.
    resp = await fetch(new URL(path, location.origin), {
      method,
      credentials: "same-origin",
      headers: body === undefined ? { Accept: "application/json" } : { Accept: "application/json", "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, "network", `the API did not answer: ${(e as Error).message}`, null);
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

export async function get<T>(path: string, signal?: AbortSignal): Promise<T> {
  return (await send("GET", path, undefined, signal)).json();
}

export async function post<T>(path: string, body?: unknown): Promise<T> {
  const resp = await send("POST", path, body);
  return resp.status === 204 ? (undefined as T) : resp.json();
}

export async function del(path: string): Promise<void> {
  await send("DELETE", path);
}

/**
 * Follow a streamed answer (`?follow=true`): `onLines` gets whole lines as they come. Resolves
 * when the server ends the stream; `signal` stops it.
 */
export async function follow(path: string, onLines: (lines: string[]) => void, signal: AbortSignal): Promise<void> {
  const resp = await send("GET", path, undefined, signal);
  if (!resp.body) return;
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  const lines = new LineBuffer();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const got = lines.push(decoder.decode(value, { stream: true }));
    if (got.length) onLines(got);
  }
  const last = lines.end();
  if (last.length) onLines(last);
}

const seg = encodeURIComponent;

export const paths = {
  workspaces: () => "/v1/workspaces",
  workspace: (n: string) => `/v1/workspaces/${seg(n)}`,
  ports: (n: string) => `/v1/workspaces/${seg(n)}/ports`,
  port: (n: string, p: number) => `/v1/workspaces/${seg(n)}/ports/${p}`,
  orgs: () => "/v1/orgs",
  apps: (o: string) => `/v1/orgs/${seg(o)}/apps`,
  envs: (o: string, a: string) => `/v1/orgs/${seg(o)}/apps/${seg(a)}/envs`,
  env: (o: string, a: string, e: string) => `/v1/orgs/${seg(o)}/apps/${seg(a)}/envs/${seg(e)}`,
  instanceLogs: (id: string) => `/v1/instances/${seg(id)}/logs?follow=true&tail=200`,
  events: (after: number) => `/v1/events?follow=true&after=${after}`,
  lastEvents: (n: number) => `/v1/events?last=${n}`,
};

// The API's resources, as far as the console reads them (api/openapi.json has them all).

export interface List<T> {
  items: T[];
}
export interface Org {
  id: string;
  name: string;
  created_at: string;
}
export interface App {
  id: string;
  name: string;
  created_at: string;
}
export interface Env {
  id: string;
  name: string;
  desired_release_id?: string | null;
  current_deploy_id?: string | null;
  created_at: string;
}
export interface WorkspacePort {
  port: number;
  path: string;
}
export interface Workspace {
  id: string;
  name: string;
  org_id: string;
  desired: string;
  status: string;
  reason?: string | null;
  cpus: number;
  memory_mib: number;
  disk_gib: number;
  node: string;
  path: string;
  url?: string | null;
  ports: WorkspacePort[];
  created_at: string;
  last_accessed_at?: string | null;
  last_started_at?: string | null;
  last_log_lines?: string[];
  activity: { at: string; event: string; detail: string }[];
}
export interface PhaseTiming {
  phase: string;
  at: string;
  after_ms: number;
}
export interface Deploy {
  id: string;
  kind: string;
  status: string;
  release_id: string;
  reason?: string | null;
  phases: PhaseTiming[];
  created_at: string;
}
export interface BootTimings {
  root_disk_ms?: number | null;
  vmm_spawned_ms?: number | null;
  kernel_to_init_ms?: number | null;
  init_to_entrypoint_ms?: number | null;
  running_ms?: number | null;
  healthy_ms?: number | null;
}
export interface Instance {
  id: string;
  process: string;
  release_id: string;
  status: string;
  desired_state: string;
  health?: string | null;
  address?: string | null;
  reason?: string | null;
  boot?: BootTimings | null;
  created_at: string;
  ready_at?: string | null;
}
export interface RouteListener {
  node: string;
  state: string;
  reason?: string | null;
}
export interface ApiRoute {
  id: string;
  protocol: string;
  port: number;
  hostname?: string | null;
  process: string;
  backend_port: number;
  listeners: RouteListener[];
}
export interface ProcessState {
  process: string;
  desired_instances: number;
  desired_release_id?: string | null;
  instances_by_status: Record<string, number>;
  running_desired_release: number;
  ready_desired_release: number;
  differences: string[];
}
export interface EnvDescription {
  env: Env;
  current_deploy?: Deploy | null;
  processes: ProcessState[];
  routes: ApiRoute[];
}
export interface Envelope {
  seq: number;
  event_type: string;
  aggregate_type: string;
  aggregate_id: string;
  actor: string;
  occurred_at: string;
  org_id?: string | null;
  request_id?: string | null;
}
