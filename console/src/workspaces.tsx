// Workspaces: the list (polled, faster while one changes state), create with live progress,
// start, stop, delete (confirmed), open in a new tab on the workspace origin, ports.

import { useEffect, useState } from "preact/hooks";
import { ApiError, del, get, List, Org, paths, post, Workspace } from "./api";
import { ErrorBox, External, Confirm, Status, Time, usePoll } from "./ui";
import { actions, checkPort, isTransient, mib, MAX_PORTS, optionalInt, progress, workspaceToStop, CREATE_STEPS } from "./state";

export function WorkspacesPage() {
  const list = usePoll(
    (signal) => get<List<Workspace>>(paths.workspaces(), signal),
    (d) => (d && d.items.some((w) => isTransient(w.status)) ? 1000 : 3000),
    [],
  );
  // The workspace this page created last, shown with its progress until it moves on (or is
  // gone once it was listed; right after the create, the list may not have it yet).
  const [creating, setCreating] = useState<{ name: string; seen: boolean } | null>(null);
  const items = list.data?.items ?? [];
  const created = creating === null ? null : (items.find((w) => w.name === creating.name) ?? null);
  useEffect(() => {
    if (creating === null) return;
    if (created && progress(created.status).left) setCreating(null);
    else if (created && !creating.seen) setCreating({ name: creating.name, seen: true });
    else if (!created && creating.seen) setCreating(null);
  }, [creating, created?.status, created === null]);
  return (
    <section aria-labelledby="ws-title">
      <h1 id="ws-title">Workspaces</h1>
      <CreateForm
        onCreated={(name) => {
          setCreating({ name, seen: false });
          list.refresh();
        }}
        onChanged={list.refresh}
      />
      {creating && <CreateProgress workspace={created} name={creating.name} />}
      <ErrorBox error={list.error} />
      {list.data === null && !list.error && <p class="muted">Loading…</p>}
      {list.data && items.length === 0 && <p class="muted" id="no-workspaces">No workspaces yet: create one above.</p>}
      {items.length > 0 && (
        <table class="list" id="workspaces">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Status</th>
              <th scope="col">Resources</th>
              <th scope="col">Node</th>
              <th scope="col">Last access</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {items.map((w) => (
              <WorkspaceRow key={w.id} w={w} onChanged={list.refresh} />
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function CreateProgress(props: { name: string; workspace: Workspace | null }) {
  const w = props.workspace;
  if (!w) return null;
  const p = progress(w.status);
  return (
    <div class={`progress ${p.failed ? "failed" : p.done ? "done" : ""}`} id="create-progress" role="status" aria-live="polite">
      <strong>{props.name}</strong>:{" "}
      {CREATE_STEPS.map((s, i) => (
        <span key={s} class={i < p.step ? "step reached" : "step"}>
          {s}
        </span>
      ))}
      {p.failed && <span> failed: {w.reason ?? "see its activity"}</span>}
      {p.done && !p.failed && <span> — ready</span>}
      {!p.done && <progress max={p.of} value={p.step} aria-label="progress" />}
    </div>
  );
}

function CreateForm(props: { onCreated: (name: string) => void; onChanged: () => void }) {
  const orgs = usePoll((signal) => get<List<Org>>(paths.orgs(), signal), () => 10000, []);
  const [name, setName] = useState("");
  const [org, setOrg] = useState("");
  const [cpus, setCpus] = useState("");
  const [memory, setMemory] = useState("");
  const [disk, setDisk] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const orgName = org || orgs.data?.items[0]?.name || "";
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    let body;
    try {
      body = {
        name: name.trim(),
        org: orgName,
        cpus: optionalInt(cpus, "vCPUs", 1, 64),
        memory_mib: optionalInt(memory, "memory (MiB)", 256, 262144),
        disk_gib: optionalInt(disk, "disk (GiB)", 1, 4096),
      };
    } catch (err) {
      setError(err);
      return;
    }
    setBusy(true);
    try {
      await post<Workspace>(paths.workspaces(), body);
      props.onCreated(body.name);
      setName("");
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const stopName = error instanceof ApiError && error.code === "capacity_exhausted" ? workspaceToStop(error.message) : null;
  return (
    <form class="create" onSubmit={submit} aria-label="New workspace">
      <fieldset disabled={busy}>
        <legend>New workspace</legend>
        <label>
          Name <input id="ws-name" required value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="dev" pattern="[a-z0-9][a-z0-9-]*" />
        </label>
        <label>
          Org{" "}
          <select id="ws-org" value={orgName} onChange={(e) => setOrg(e.currentTarget.value)}>
            {(orgs.data?.items ?? []).map((o) => (
              <option key={o.id} value={o.name}>
                {o.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          vCPUs <input id="ws-cpus" inputMode="numeric" size={3} value={cpus} onInput={(e) => setCpus(e.currentTarget.value)} placeholder="2" />
        </label>
        <label>
          Memory MiB <input id="ws-memory" inputMode="numeric" size={6} value={memory} onInput={(e) => setMemory(e.currentTarget.value)} placeholder="4096" />
        </label>
        <label>
          Disk GiB <input id="ws-disk" inputMode="numeric" size={4} value={disk} onInput={(e) => setDisk(e.currentTarget.value)} placeholder="10" />
        </label>
        <button type="submit" id="ws-create">
          Create
        </button>
      </fieldset>
      <ErrorBox error={error}>
        {stopName && (
          <button
            type="button"
            id="stop-lru"
            onClick={async () => {
              try {
                await post(`${paths.workspace(stopName)}/stop`);
                setError(null);
                props.onChanged();
              } catch (err) {
                setError(err);
              }
            }}
          >
            Stop {stopName}
          </button>
        )}
      </ErrorBox>
    </form>
  );
}

function WorkspaceRow(props: { w: Workspace; onChanged: () => void }) {
  const { w } = props;
  const [error, setError] = useState<unknown>(null);
  const [confirming, setConfirming] = useState(false);
  const [showPorts, setShowPorts] = useState(false);
  const a = actions(w.status, w.desired);
  const act = async (what: "start" | "stop") => {
    setError(null);
    try {
      await post(`${paths.workspace(w.name)}/${what}`);
      props.onChanged();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <>
      <tr id={`ws-${w.name}`} data-status={w.status}>
        <th scope="row">{w.name}</th>
        <td>
          <Status status={w.status} />
          {w.reason && <div class="muted small">{w.reason}</div>}
        </td>
        <td>
          {w.cpus} vCPU, {mib(w.memory_mib)}, {w.disk_gib} GiB disk
        </td>
        <td>{w.node}</td>
        <td>
          <Time at={w.last_accessed_at} />
        </td>
        <td class="actions">
          {a.open && w.url && (
            <External href={w.url} class="button open">
              Open ↗
            </External>
          )}
          {a.start && (
            <button type="button" class="start" onClick={() => act("start")}>
              Start
            </button>
          )}
          {a.stop && (
            <button type="button" class="stop" onClick={() => act("stop")}>
              Stop
            </button>
          )}
          <button type="button" class="ports" aria-expanded={showPorts} onClick={() => setShowPorts(!showPorts)}>
            Ports ({w.ports.length})
          </button>
          {w.desired !== "deleted" && (
            <button type="button" class="delete danger" onClick={() => setConfirming(true)}>
              Delete
            </button>
          )}
        </td>
      </tr>
      {(error || showPorts || (w.status === "failed" && w.last_log_lines?.length)) && (
        <tr class="detail">
          <td colSpan={6}>
            <ErrorBox error={error} />
            {w.status === "failed" && !!w.last_log_lines?.length && <pre class="log">{w.last_log_lines.join("\n")}</pre>}
            {showPorts && <Ports w={w} onChanged={props.onChanged} />}
          </td>
        </tr>
      )}
      {confirming && (
        <Confirm
          title={`Delete workspace ${w.name}?`}
          confirmLabel={`Delete ${w.name}`}
          onClose={() => setConfirming(false)}
          onConfirm={async () => {
            await del(paths.workspace(w.name));
            props.onChanged();
          }}
        >
          <p>
            This is <strong>irreversible</strong>: its VM stops and its home disk ({w.disk_gib} GiB) is deleted with
            everything in it.
          </p>
        </Confirm>
      )}
    </>
  );
}

function Ports(props: { w: Workspace; onChanged: () => void }) {
  const { w } = props;
  const [text, setText] = useState("");
  const [error, setError] = useState<unknown>(null);
  const registered = w.ports.map((p) => p.port);
  const base = w.url ? w.url.slice(0, w.url.length - w.path.length) : null;
  return (
    <div class="ports-panel" id={`ports-${w.name}`}>
      <p class="muted small">
        A registered port is served at <code>{w.path}port/N/</code> on the workspace origin; it answers 502 until
        something in the workspace listens on it. At most {MAX_PORTS}.
      </p>
      <ul>
        {w.ports.map((p) => (
          <li key={p.port}>
            {base ? <External href={base + p.path}>{p.path}</External> : <code>{p.path}</code>}{" "}
            <button
              type="button"
              aria-label={`Remove port ${p.port}`}
              onClick={async () => {
                try {
                  await del(paths.port(w.name, p.port));
                  setError(null);
                  props.onChanged();
                } catch (e) {
                  setError(e);
                }
              }}
            >
              Remove
            </button>
          </li>
        ))}
      </ul>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          const c = checkPort(text, registered);
          if ("error" in c) {
            setError(new Error(c.error));
            return;
          }
          try {
            await post(paths.ports(w.name), { port: c.port });
            setText("");
            setError(null);
            props.onChanged();
          } catch (err) {
            setError(err);
          }
        }}
      >
        <label>
          Port <input class="port-input" inputMode="numeric" size={6} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </label>{" "}
        <button type="submit" class="port-add" disabled={registered.length >= MAX_PORTS}>
          Add port
        </button>
      </form>
      <ErrorBox error={error} />
    </div>
  );
}
