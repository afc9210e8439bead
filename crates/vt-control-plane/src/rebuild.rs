//! Rebuild the views from the log and check them against the live ones.

use std::time::Duration;

use vt_store::{Projector, Store, StoreError, ViewQuery};

use vt_api::RebuildReport;

/// Bring the live views up to the log's head (a server stopped before its
/// projector caught up left them behind: that is not a difference), snapshot
/// them, drop them, replay the whole log through a fresh projector and
/// compare. Run it while no projector is writing (offline), or accept that a
/// live projector may race (it loses and retries).
pub async fn rebuild_views(store: std::sync::Arc<dyn Store>) -> Result<RebuildReport, StoreError> {
    project_all(&Projector::new(store.clone())).await?;
    let before = store.view_list(&ViewQuery::default()).await?;
    store.reset_views().await?;
    project_all(&Projector::new(store.clone())).await?;
    let after = store.view_list(&ViewQuery::default()).await?;
    let mut differing = vec![];
    let key = |r: &vt_views::ViewRow| format!("{}/{}", r.kind.as_str(), r.id);
    let before_map: std::collections::BTreeMap<String, &vt_views::ViewRow> =
        before.iter().map(|r| (key(r), r)).collect();
    let after_map: std::collections::BTreeMap<String, &vt_views::ViewRow> = after.iter().map(|r| (key(r), r)).collect();
    for k in before_map.keys().chain(after_map.keys()) {
        if before_map.get(k) != after_map.get(k) && !differing.contains(k) {
            differing.push(k.clone());
        }
    }
    Ok(RebuildReport { events: store.head().await?, rows: after.len(), differing_rows: differing })
}

/// Step `projector` until it has applied every event of the log.
async fn project_all(projector: &Projector) -> Result<(), StoreError> {
    loop {
        match projector.step().await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.is_conflict() => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => return Err(e),
        }
    }
}
