//! The event log, as a caller may read it: an admin all of it, an org's
//! members the events of their org. Nodes read no events.

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use vt_api::EventPage;
use vt_events::Envelope;
use vt_ids::OrgId;

use crate::authz::{Action, Resource};
use crate::{ApiErr, ApiResult, ControlPlane, Ctx};

impl ControlPlane {
    /// Whose events the caller reads: its org's, or (`None`) every org's,
    /// which is the operator's to read.
    fn event_scope(&self, ctx: &Ctx) -> ApiResult<Option<OrgId>> {
        match ctx.caller.org() {
            Some(org) => {
                ctx.authorize(Action::Read, Resource::Org(org), || ApiErr::not_found("org not found"))?;
                Ok(Some(org))
            }
            None => {
                ctx.authorize_cluster(Action::Operate)?;
                Ok(None)
            }
        }
    }

    async fn read_events_of(&self, org: Option<OrgId>, after: u64, limit: u32) -> ApiResult<Vec<Envelope>> {
        Ok(match org {
            None => self.store.read_events(after, limit).await?,
            Some(org) => self.store.read_org_events(&org.to_string(), after, limit).await?,
        })
    }

    /// A page of events with `seq > after`. Positions (`seq`, `head`) are the log's.
    pub async fn event_list(&self, ctx: &Ctx, after: u64, limit: u32) -> ApiResult<EventPage> {
        let org = self.event_scope(ctx)?;
        let head = self.store.head().await?;
        let events = self.read_events_of(org, after, limit).await?;
        let next_after = events.last().map(|e| e.seq).unwrap_or(after);
        Ok(EventPage { events, next_after, head })
    }

    /// The last `n` events the caller may read, in order; `next_after` is the last one's seq.
    pub async fn event_last(&self, ctx: &Ctx, n: u32) -> ApiResult<EventPage> {
        let org = self.event_scope(ctx)?.map(|o| o.to_string());
        let head = self.store.head().await?;
        let events = self.store.read_last_events(org.as_deref(), n).await?;
        let next_after = events.last().map(|e| e.seq).unwrap_or(head);
        Ok(EventPage { events, next_after, head })
    }

    /// Every event with `seq > after`, then new ones as they are appended, as NDJSON; the
    /// stream ends when the server stops ([`ControlPlane::close_streams`]).
    pub fn event_follow(
        self: std::sync::Arc<Self>,
        ctx: &Ctx,
        after: u64,
    ) -> ApiResult<impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static> {
        let org = self.event_scope(ctx)?;
        let head = self.store.subscribe_head();
        Ok(futures_util::stream::unfold((self, after, head), move |(cp, cursor, mut head)| async move {
            loop {
                match cp.read_events_of(org, cursor, 500).await {
                    Ok(events) if !events.is_empty() => {
                        let next = events.last().map(|e| e.seq).unwrap_or(cursor);
                        let mut buf = Vec::new();
                        for e in &events {
                            if serde_json::to_writer(&mut buf, e).is_ok() {
                                buf.push(b'\n');
                            }
                        }
                        return Some((Ok(Bytes::from(buf)), (cp, next, head)));
                    }
                    Ok(_) if cp.is_closing() => return None,
                    Ok(_) => {
                        tokio::select! {
                            _ = head.changed() => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = cp.closed() => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.internal.unwrap_or(e.message), "event stream read failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }))
    }
}
