// Small building blocks every page uses: links inside the app, polling, errors, dialogs.

import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";
import { localTime } from "./state";

/** Navigate inside the app without a reload. */
export function navigate(path: string) {
  if (location.pathname === path) return;
  history.pushState(null, "", path);
  dispatchEvent(new PopStateEvent("popstate"));
}

export function Link(props: { href: string; children: ComponentChildren; class?: string; id?: string }) {
  return (
    <a
      href={props.href}
      class={props.class}
      id={props.id}
      onClick={(e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(props.href);
      }}
    >
      {props.children}
    </a>
  );
}

/** A link to the workspace origin: always a new tab, never loaded into this origin. */
export function External(props: { href: string; children: ComponentChildren; class?: string; title?: string }) {
  return (
    <a href={props.href} target="_blank" rel="noopener noreferrer" class={props.class} title={props.title}>
      {props.children}
    </a>
  );
}

export interface Polled<T> {
  data: T | null;
  error: unknown;
  refresh: () => void;
}

/**
 * `load` now and then every `every(data)` milliseconds while mounted; a failed load keeps the
 * last data and shows the error until a load succeeds.
 */
export function usePoll<T>(load: (signal: AbortSignal) => Promise<T>, every: (data: T | null) => number, deps: unknown[]): Polled<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  const latest = useRef<T | null>(null);
  useEffect(() => {
    latest.current = null;
    setData(null);
    setError(null);
  }, deps);
  useEffect(() => {
    const ctl = new AbortController();
    let timer: number | undefined;
    let stopped = false;
    const run = async () => {
      try {
        const d = await load(ctl.signal);
        if (stopped) return;
        latest.current = d;
        setData(d);
        setError(null);
      } catch (e) {
        if (stopped || (e as Error).name === "AbortError") return;
        setError(e);
      }
      if (!stopped) timer = window.setTimeout(run, every(latest.current));
    };
    run();
    return () => {
      stopped = true;
      ctl.abort();
      window.clearTimeout(timer);
    };
  }, [...deps, tick]);
  return { data, error, refresh: () => setTick((t) => t + 1) };
}

/** An error as the API gave it: the message, its code, and the request id to look for in the server's log. */
export function ErrorBox(props: { error: unknown; children?: ComponentChildren }) {
  const e = props.error;
  if (!e) return null;
  const api = e instanceof ApiError ? e : null;
  return (
    <div class="error" role="alert">
      <strong>{api ? `${api.status || "error"} ${api.code}` : "error"}:</strong> {(e as Error).message ?? String(e)}
      {api?.field && <span class="muted"> (field {api.field})</span>}
      {api?.requestId && (
        <div class="muted small">
          request id <code class="request-id">{api.requestId}</code>
        </div>
      )}
      {props.children}
    </div>
  );
}

export function Time(props: { at: string | null | undefined }) {
  return props.at ? <time dateTime={props.at} title={props.at}>{localTime(props.at)}</time> : <span class="muted">never</span>;
}

export function Status(props: { status: string }) {
  return <span class={`status status-${props.status}`}>{props.status}</span>;
}

/**
 * A modal confirmation (the native `<dialog>`: focus stays in it, Escape cancels). `confirm`
 * runs on the confirm button; the dialog closes when it settles.
 */
export function Confirm(props: {
  title: string;
  children: ComponentChildren;
  confirmLabel: string;
  onConfirm: () => Promise<void> | void;
  onClose: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    ref.current?.showModal();
  }, []);
  return (
    <dialog ref={ref} class="confirm" onClose={props.onClose} aria-labelledby="confirm-title">
      <h2 id="confirm-title">{props.title}</h2>
      <div>{props.children}</div>
      <ErrorBox error={error} />
      <div class="buttons">
        <button type="button" onClick={() => ref.current?.close()} autofocus>
          Cancel
        </button>
        <button
          type="button"
          class="danger"
          id="confirm-button"
          disabled={busy}
          onClick={async () => {
            setBusy(true);
            try {
              await props.onConfirm();
              ref.current?.close();
            } catch (e) {
              setError(e);
            } finally {
              setBusy(false);
            }
          }}
        >
          {props.confirmLabel}
        </button>
      </div>
    </dialog>
  );
}
