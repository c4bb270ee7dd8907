//! Follows grant changes and ends the live sessions they kill.
//!
//! A notification names a grant, a user or a device; the sessions it may touch are re-checked
//! against the store (the notification is a hint, the store is the truth) and ended with the
//! reason the store gives. Every `reconcile_every`, all live sessions are re-checked the same
//! way and the audit log's health is probed, so a lost notification delays a cut by at most one
//! period. If the store cannot be read, live sessions go on (they still end at their window end
//! by their own timer) and new ones are refused until it answers again. Site connectors are
//! re-checked the same way (revoked or re-enrolled sites lose their connection), and so are
//! supervisors' requests to end one session (`session:<id>`; the reconciliation reads the
//! outstanding requests of this relay's open sessions).

use std::collections::BTreeMap;
use std::sync::Arc;

use portcullis_core::GrantId;
use portcullis_store::{GrantChange, RelaySessionId};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::connectors;
use crate::grant;
use crate::registry::LiveSession;

pub(crate) async fn watch(
    shared: Arc<Shared>,
    mut changes: broadcast::Receiver<GrantChange>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(shared.config.reconcile_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let affected = tokio::select! {
            () = stop.cancelled() => return,
            change = changes.recv() => match change {
                Ok(change) => {
                    match &change {
                        GrantChange::Site(site) => connectors::recheck(&shared, Some(site)).await,
                        GrantChange::Session(id) => end_requested(&shared, Some(id)).await,
                        GrantChange::All => {
                            connectors::recheck(&shared, None).await;
                            end_requested(&shared, None).await;
                        }
                        _ => {}
                    }
                    affected(&shared, &change)
                }
                Err(RecvError::Lagged(_)) => {
                    connectors::recheck(&shared, None).await;
                    end_requested(&shared, None).await;
                    shared.registry.all()
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                shared.auditor.probe().await;
                connectors::recheck(&shared, None).await;
                end_requested(&shared, None).await;
                shared.registry.all()
            }
        };
        recheck(&shared, affected).await;
    }
}

fn affected(shared: &Shared, change: &GrantChange) -> Vec<Arc<LiveSession>> {
    match change {
        GrantChange::Grant(id) => shared.registry.matching(|s| s.grant.id == *id),
        GrantChange::User(u) => shared.registry.matching(|s| s.grant.vendor.as_str() == u),
        GrantChange::Device(d) => shared.registry.matching(|s| s.grant.device == *d),
        // A site's connector is re-checked by `connectors::recheck`; its sessions are not
        // touched (their streams end with the connector's connection).
        GrantChange::Site(_) => Vec::new(),
        // Not the grant's business: `end_requested` ends that one session.
        GrantChange::Session(_) => Vec::new(),
        GrantChange::All => shared.registry.all(),
    }
}

/// Ends the sessions a supervisor asked to end: session `id` when told of it (if it is one of
/// this relay's), else every open session of this relay with a request (the reconciliation).
/// The request is re-read from the store either way: the notice is only a hint.
async fn end_requested(shared: &Shared, id: Option<&RelaySessionId>) {
    let found = match id {
        Some(id) => {
            let Some(s) = shared.registry.get(id.as_str()) else {
                return;
            };
            shared
                .store
                .session_end_request(id)
                .await
                .map(|r| r.map(|r| (s, r)).into_iter().collect::<Vec<_>>())
        }
        None => shared
            .store
            .end_requests(&shared.config.name)
            .await
            .map(|all| {
                all.into_iter()
                    .filter_map(|(id, r)| Some((shared.registry.get(&id)?, r)))
                    .collect()
            }),
    };
    match found {
        Ok(found) => {
            for (s, request) in found {
                tracing::info!(
                    session = %s.id,
                    by = %request.by,
                    "ending the session: a supervisor asked"
                );
                s.end_by_supervisor(request);
            }
        }
        Err(e) => {
            tracing::error!("cannot read supervisors' session end requests: {e}");
            shared.auditor.mark_unhealthy();
        }
    }
}

/// Re-reads each affected grant once and ends the sessions it no longer allows, or whose
/// allowed ports shrank or whose ports' modes changed (a port now decoded as Modbus, writes no
/// longer allowed, a new write scope): the vendor reconnects and gets what the policy now says.
/// Open streams are never re-judged under a new mode midway.
pub(crate) async fn recheck(shared: &Shared, sessions: Vec<Arc<LiveSession>>) {
    let mut by_grant: BTreeMap<GrantId, Vec<Arc<LiveSession>>> = BTreeMap::new();
    for s in sessions {
        by_grant.entry(s.grant.id).or_default().push(s);
    }
    for (id, sessions) in by_grant {
        match grant::check(&shared.store, id, shared.clock.now()).await {
            Ok(Ok(live)) => {
                for s in sessions {
                    if live.session_revoked(s.started_at, s.token_iat) {
                        s.end(portcullis_core::wire::EndReason::SessionRevoked);
                    } else if !live.ports.is_superset(&s.grant.ports)
                        || live.address != s.grant.address
                        || live.site != s.grant.site
                        || live.modes != s.grant.modes
                        || live.write_scope != s.grant.write_scope
                    {
                        s.end(portcullis_core::wire::EndReason::PolicyChanged);
                    }
                }
            }
            Ok(Err(dead)) => {
                for s in sessions {
                    s.end(dead.end_reason());
                }
            }
            Err(e) => {
                tracing::error!("cannot re-check grant {id}: {e}");
                shared.auditor.mark_unhealthy();
            }
        }
    }
}
