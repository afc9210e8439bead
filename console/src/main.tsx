// The vt console: a single-page app at /app/ on the API origin (docs/console.md).

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./style.css";
import { parseRoute, Route, routePath } from "./state";
import { Link } from "./ui";
import { WorkspacesPage } from "./workspaces";
import { AppPage, EnvPage, EventsPage, OrgPage, OrgsPage } from "./services";

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.pathname));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.pathname));
    addEventListener("popstate", on);
    return () => removeEventListener("popstate", on);
  }, []);
  return route;
}

function Page(props: { route: Route }) {
  const r = props.route;
  switch (r.page) {
    case "workspaces":
      return <WorkspacesPage />;
    case "orgs":
      return <OrgsPage />;
    case "org":
      return <OrgPage org={r.org} />;
    case "app":
      return <AppPage org={r.org} app={r.app} />;
    case "env":
      return <EnvPage org={r.org} app={r.app} env={r.env} />;
    case "events":
      return <EventsPage org={r.org} />;
    case "not_found":
      return (
        <section>
          <h1>Not found</h1>
          <p>
            Nothing at <code>{r.path}</code>. <Link href={routePath({ page: "workspaces" })}>Workspaces</Link>
          </p>
        </section>
      );
  }
}

function Shell() {
  const route = useRoute();
  const services = route.page !== "workspaces" && route.page !== "not_found";
  useEffect(() => {
    // Focus the page's heading after navigating, so keyboard and screen-reader users land on it.
    const h = document.querySelector<HTMLElement>("main h1");
    if (h) {
      h.tabIndex = -1;
      h.focus();
    }
  }, [route]);
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header>
        <span class="brand">vt</span>
        <nav aria-label="Sections">
          <Link href={routePath({ page: "workspaces" })} class={route.page === "workspaces" ? "current" : ""} id="nav-workspaces">
            Workspaces
          </Link>
          <Link href={routePath({ page: "orgs" })} class={services ? "current" : ""} id="nav-services">
            Services
          </Link>
        </nav>
        <span class="muted small">times in your local time zone ({Intl.DateTimeFormat().resolvedOptions().timeZone})</span>
      </header>
      <main id="main">
        <Page route={route} />
      </main>
    </>
  );
}

render(<Shell />, document.getElementById("root")!);
