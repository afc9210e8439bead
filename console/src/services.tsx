// Services: orgs → apps → envs; an env's page (describe, instances, deploys, routes, an
// instance's live log); an org's event stream.

import { useEffect, useRef, useState } from "preact/hooks";
import { App, Deploy, Env, EnvDescription, Envelope, follow, get, Instance, List, Org, paths } from "./api";
import { ErrorBox, Link, Status, Time, usePoll } from "./ui";
import { duration, keepLast, parseLogLine, LogLine, phaseRows, routePath } from "./state";

export function OrgsPage() {
  const orgs = usePoll((s) => get<List<Org>>(paths.orgs(), s), () => 5000, []);
  return (
    <section>
      <h1>Orgs</h1>
      <ErrorBox error={orgs.error} />
      {orgs.data && orgs.data.items.length === 0 && <p class="muted">No orgs yet: <code>vt org create NAME</code>.</p>}
      <ul class="cards" id="orgs">
        {orgs.data?.items.map((o) => (
          <li key={o.id}>
            <Link href={routePath({ page: "org", org: o.name })}>{o.name}</Link>{" "}
            <span class="muted small">
              since <Time at={o.created_at} />
            </span>
          </li>
        ))}
      </ul>
    </section>
  );
}

export function OrgPage(props: { org: string }) {
  const apps = usePoll((s) => get<List<App>>(paths.apps(props.org), s), () => 5000, [props.org]);
  return (
    <section>
      <Crumbs org={props.org} />
      <h1>Org {props.org}</h1>
      <p>
        <Link href={routePath({ page: "events", org: props.org })} id="org-events">
          Event stream
        </Link>
      </p>
      <h2>Apps</h2>
      <ErrorBox error={apps.error} />
      {apps.data && apps.data.items.length === 0 && <p class="muted">No apps yet.</p>}
      <ul class="cards" id="apps">
        {apps.data?.items.map((a) => (
          <li key={a.id}>
            <Link href={routePath({ page: "app", org: props.org, app: a.name })}>{a.name}</Link>
          </li>
        ))}
      </ul>
    </section>
  );
}

export function AppPage(props: { org: string; app: string }) {
  const envs = usePoll((s) => get<List<Env>>(paths.envs(props.org, props.app), s), () => 5000, [props.org, props.app]);
  return (
    <section>
      <Crumbs org={props.org} app={props.app} />
      <h1>App {props.app}</h1>
      <h2>Envs</h2>
      <ErrorBox error={envs.error} />
      {envs.data && envs.data.items.length === 0 && <p class="muted">No envs yet.</p>}
      <ul class="cards" id="envs">
        {envs.data?.items.map((e) => (
          <li key={e.id}>
            <Link href={routePath({ page: "env", org: props.org, app: props.app, env: e.name })}>{e.name}</Link>{" "}
            <span class="muted small">{e.desired_release_id ? `release ${e.desired_release_id}` : "nothing deployed"}</span>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Crumbs(props: { org: string; app?: string; env?: string }) {
  return (
    <nav class="crumbs" aria-label="Breadcrumb">
      <Link href={routePath({ page: "orgs" })}>orgs</Link> / <Link href={routePath({ page: "org", org: props.org })}>{props.org}</Link>
      {props.app && (
        <>
          {" / "}
          <Link href={routePath({ page: "app", org: props.org, app: props.app })}>{props.app}</Link>
        </>
      )}
      {props.env && <> / {props.env}</>}
    </nav>
  );
}

interface EnvData {
  describe: EnvDescription;
  instances: Instance[];
  deploys: Deploy[];
}

export function EnvPage(props: { org: string; app: string; env: string }) {
  const base = paths.env(props.org, props.app, props.env);
  const env = usePoll<EnvData>(
    async (s) => {
      const [describe, instances, deploys] = await Promise.all([
        get<EnvDescription>(`${base}/describe`, s),
        get<List<Instance>>(`${base}/instances`, s),
        get<List<Deploy>>(`${base}/deploys`, s),
      ]);
      return { describe, instances: instances.items, deploys: deploys.items };
    },
    () => 2000,
    [base],
  );
  const [logOf, setLogOf] = useState<string | null>(null);
  const d = env.data;
  return (
    <section>
      <Crumbs org={props.org} app={props.app} env={props.env} />
      <h1>
        Env {props.app}/{props.env}
      </h1>
      <ErrorBox error={env.error} />
      {!d && !env.error && <p class="muted">Loading…</p>}
      {d && (
        <>
          <h2>Desired vs running vs ready</h2>
          <p class="muted small">
            release {d.describe.env.desired_release_id ?? "none"}
            {d.describe.current_deploy && <> · current deploy {d.describe.current_deploy.id} ({d.describe.current_deploy.status})</>}
          </p>
          <table class="list" id="describe">
            <thead>
              <tr>
                <th scope="col">Process</th>
                <th scope="col">Desired</th>
                <th scope="col">Running</th>
                <th scope="col">Ready</th>
                <th scope="col">By status</th>
                <th scope="col">Differences</th>
              </tr>
            </thead>
            <tbody>
              {d.describe.processes.map((p) => (
                <tr key={p.process}>
                  <th scope="row">{p.process}</th>
                  <td>{p.desired_instances}</td>
                  <td>{p.running_desired_release}</td>
                  <td>{p.ready_desired_release}</td>
                  <td class="small">
                    {Object.entries(p.instances_by_status)
                      .map(([s, n]) => `${s} ${n}`)
                      .join(", ") || "–"}
                  </td>
                  <td class="small">{p.differences.length ? <ul>{p.differences.map((x) => <li key={x}>{x}</li>)}</ul> : <span class="ok">none</span>}</td>
                </tr>
              ))}
            </tbody>
          </table>

          <h2>Instances</h2>
          <table class="list" id="instances">
            <thead>
              <tr>
                <th scope="col">Instance</th>
                <th scope="col">Process</th>
                <th scope="col">Status</th>
                <th scope="col">Health</th>
                <th scope="col">Address</th>
                <th scope="col">Boot (root disk · VMM · kernel→init · init→entrypoint · running · healthy)</th>
                <th scope="col">Log</th>
              </tr>
            </thead>
            <tbody>
              {d.instances.map((i) => (
                <tr key={i.id} id={`inst-${i.id}`}>
                  <th scope="row">
                    <code class="small">{i.id}</code>
                  </th>
                  <td>{i.process}</td>
                  <td>
                    <Status status={i.status} />
                    {i.reason && <div class="muted small">{i.reason}</div>}
                  </td>
                  <td>{i.health ?? "–"}</td>
                  <td>
                    <code>{i.address ?? "–"}</code>
                  </td>
                  <td class="small">
                    {i.boot
                      ? [i.boot.root_disk_ms, i.boot.vmm_spawned_ms, i.boot.kernel_to_init_ms, i.boot.init_to_entrypoint_ms, i.boot.running_ms, i.boot.healthy_ms]
                          .map(duration)
                          .join(" · ")
                      : "–"}
                  </td>
                  <td>
                    <button type="button" class="follow-log" aria-pressed={logOf === i.id} onClick={() => setLogOf(logOf === i.id ? null : i.id)}>
                      {logOf === i.id ? "Hide log" : "Follow log"}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {logOf && <LiveLog instance={logOf} />}

          <h2>Deploys</h2>
          <table class="list" id="deploys">
            <thead>
              <tr>
                <th scope="col">Deploy</th>
                <th scope="col">Kind</th>
                <th scope="col">Status</th>
                <th scope="col">Accepted</th>
                <th scope="col">Phases (after acceptance)</th>
              </tr>
            </thead>
            <tbody>
              {d.deploys.map((dep) => (
                <tr key={dep.id} class="deploy">
                  <th scope="row">
                    <code class="small">{dep.id}</code>
                  </th>
                  <td>{dep.kind}</td>
                  <td>
                    <Status status={dep.status} />
                    {dep.reason && <div class="muted small">{dep.reason}</div>}
                  </td>
                  <td>
                    <Time at={dep.created_at} />
                  </td>
                  <td>
                    <ol class="phases">
                      {phaseRows(dep.phases).map((p) => (
                        <li key={p.phase} class={p.reached ? "phase reached" : "phase"} data-phase={p.phase}>
                          {p.phase} {p.reached ? `+${duration(p.after_ms)}` : "…"}
                        </li>
                      ))}
                    </ol>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>

          <h2>Routes</h2>
          {d.describe.routes.length === 0 && <p class="muted">No routes.</p>}
          {d.describe.routes.length > 0 && (
            <table class="list" id="routes">
              <thead>
                <tr>
                  <th scope="col">Protocol</th>
                  <th scope="col">Listener</th>
                  <th scope="col">To</th>
                  <th scope="col">Listeners</th>
                </tr>
              </thead>
              <tbody>
                {d.describe.routes.map((r) => (
                  <tr key={r.id}>
                    <td>{r.protocol}</td>
                    <td>
                      {r.hostname ? `${r.hostname}:` : ":"}
                      {r.port}
                    </td>
                    <td>
                      {r.process}:{r.backend_port}
                    </td>
                    <td class="small">{r.listeners.map((l) => `${l.node} ${l.state}${l.reason ? ` (${l.reason})` : ""}`).join(", ") || "not reported yet"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </section>
  );
}

const MAX_LINES = 2000;

/** An instance's log, followed (`?follow=true`) until the instance ends or the panel closes. */
function LiveLog(props: { instance: string }) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [state, setState] = useState<"following" | "ended">("following");
  const [error, setError] = useState<unknown>(null);
  const box = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const ctl = new AbortController();
    setLines([]);
    setError(null);
    setState("following");
    follow(paths.instanceLogs(props.instance), (got) => setLines((old) => keepLast(old, got.map(parseLogLine), MAX_LINES)), ctl.signal)
      .then(() => setState("ended"))
      .catch((e) => {
        if ((e as Error).name !== "AbortError") setError(e);
      });
    return () => ctl.abort();
  }, [props.instance]);
  useEffect(() => {
    const el = box.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [lines]);
  return (
    <div class="live-log">
      <h3>
        Log of <code>{props.instance}</code> <span class="muted small">({state})</span>
      </h3>
      <ErrorBox error={error} />
      <pre class="log" id="live-log" ref={box} tabIndex={0} aria-live="polite">
        {lines.map((l, i) => (
          <div key={i} class={`line ${l.stream}`}>
            {l.at && <span class="muted">{new Date(l.at).toLocaleTimeString()} </span>}
            {l.text}
          </div>
        ))}
      </pre>
    </div>
  );
}

/** The org's events: the last 50, then followed as they are appended. */
export function EventsPage(props: { org: string }) {
  const [events, setEvents] = useState<Envelope[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [orgId, setOrgId] = useState<string | null>(null);
  useEffect(() => {
    const ctl = new AbortController();
    setEvents([]);
    setError(null);
    (async () => {
      const org = await get<Org>(`/v1/orgs/${encodeURIComponent(props.org)}`, ctl.signal);
      setOrgId(org.id);
      const mine = (e: Envelope) => e.org_id === org.id;
      const last = await get<{ events: Envelope[]; head: number }>(paths.lastEvents(1000), ctl.signal);
      setEvents(keepLast([], last.events.filter(mine), 200));
      await follow(
        paths.events(last.head),
        (lines) => {
          const got = lines.filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as Envelope).filter(mine);
          if (got.length) setEvents((old) => keepLast(old, got, 200));
        },
        ctl.signal,
      );
    })().catch((e) => {
      if ((e as Error).name !== "AbortError") setError(e);
    });
    return () => ctl.abort();
  }, [props.org]);
  return (
    <section>
      <Crumbs org={props.org} />
      <h1>Events of {props.org}</h1>
      <p class="muted small">Followed live{orgId ? ` (org ${orgId})` : ""}; newest last.</p>
      <ErrorBox error={error} />
      <table class="list" id="events">
        <thead>
          <tr>
            <th scope="col">Seq</th>
            <th scope="col">When</th>
            <th scope="col">Event</th>
            <th scope="col">Of</th>
            <th scope="col">By</th>
          </tr>
        </thead>
        <tbody>
          {events.map((e) => (
            <tr key={e.seq}>
              <td>{e.seq}</td>
              <td>
                <Time at={e.occurred_at} />
              </td>
              <td>
                <code>{e.event_type}</code>
              </td>
              <td class="small">
                {e.aggregate_type} <code>{e.aggregate_id}</code>
              </td>
              <td class="small">{e.actor}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
