//! Routing: who receives a notice, decided when the worker takes it (so an address changed
//! since the event is the one used), and the messages each of them gets.

use portcullis_core::audit::AuditEvent;
use portcullis_core::notify::{Notice, matches};
use portcullis_core::{GrantId, Role};
use portcullis_store::{
    AuditQuery, Channel, NewDelivery, OutboxNotice, RequestRecord, Store, StoreError, UserRecord,
};
use serde_json::Value;

use crate::config::NotifyConfig;
use crate::message::{Reader, Subject};

/// The accounts a notice is for, before their addresses are looked at.
fn audience<'u>(
    notice: Notice,
    event: Option<&AuditEvent>,
    request: Option<&RequestRecord>,
    users: &'u [UserRecord],
) -> Vec<&'u UserRecord> {
    let actor = event.map(|e| e.actor.as_str());
    let vendor = request.map(|r| r.request.requester.as_str());
    // A lockout names the account in its target; its actor is whatever name was typed.
    let locked = event.and_then(|e| e.target.strip_prefix("user:"));
    users
        .iter()
        .filter(|u| match notice {
            Notice::NewRequest => u.role == Role::Supervisor,
            // Not the supervisor who approved first: they cannot be the second.
            Notice::SecondApproval => {
                u.role == Role::Supervisor && Some(u.username.as_str()) != actor
            }
            Notice::Decision
            | Notice::Revoked
            | Notice::EndedBySupervisor
            | Notice::WindowEnding => Some(u.username.as_str()) == vendor,
            Notice::SessionStarted | Notice::SessionEnded => {
                u.role == Role::Supervisor && u.notify_sessions
            }
            Notice::Lockout => Some(u.username.as_str()) == locked || u.role == Role::Admin,
            Notice::Alert => u.wants_alerts(),
        })
        .collect()
}

/// What the supervisor changed between the request as made (its `request.create` event) and
/// the grant as approved.
fn narrowed(created: Option<&Value>, r: &RequestRecord) -> Vec<String> {
    let Some(c) = created else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let asked_ports: Vec<u64> = c
        .get("ports")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let got: Vec<u64> = r.request.ports.iter().map(|p| u64::from(p.get())).collect();
    if !asked_ports.is_empty() && asked_ports != got {
        out.push(format!(
            "ports {} instead of {}",
            join(&got),
            join(&asked_ports)
        ));
    }
    let asked = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
    if asked("start").is_some_and(|s| s != r.request.window.start.to_rfc3339())
        || asked("end").is_some_and(|e| e != r.request.window.end.to_rfc3339())
    {
        out.push("a shorter window".into());
    }
    if asked("access").is_some_and(|a| a != r.request.access.as_str()) {
        out.push(format!("{} access only", r.request.access.as_str()));
    }
    out
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Everything one notice becomes: an e-mail per reachable person, a post per subscribed hook.
pub async fn deliveries(
    store: &Store,
    config: &NotifyConfig,
    plant: &Reader,
    n: &OutboxNotice,
) -> Result<Vec<NewDelivery>, StoreError> {
    let event = match n.event_seq {
        Some(seq) => store
            .audit_events(&AuditQuery {
                after: Some(seq - 1),
                limit: Some(1),
                ..Default::default()
            })
            .await?
            .into_iter()
            .next()
            .filter(|e| e.seq == seq),
        None => None,
    };
    let grant = n
        .grant_id
        .or_else(|| event.as_ref().and_then(|e| e.grant_id));
    let request = match grant {
        Some(g) => store.request(g.get()).await?,
        None => None,
    };
    let details: Value = event
        .as_ref()
        .and_then(|e| serde_json::from_str(&e.details).ok())
        .unwrap_or(Value::Null);
    let mut facts = n.facts.clone();
    if n.notice == Notice::Decision
        && n.action == "request.approve"
        && let Some(r) = &request
    {
        let created = created_details(store, GrantId::new(r.id)).await?;
        facts["narrowed"] = serde_json::json!(narrowed(created.as_ref(), r));
    }
    let subject = Subject {
        notice: n.notice,
        action: &n.action,
        event: event.as_ref(),
        details,
        facts: &facts,
        request: request.as_ref(),
    };
    let mut out = Vec::new();
    if config.smtp.is_some() {
        let users = store.list_users().await?;
        for u in audience(n.notice, event.as_ref(), request.as_ref(), &users) {
            let Some(email) = u.reachable() else { continue };
            let (title, body) = subject.email(&Reader::for_user(plant, Some(u)));
            out.push(NewDelivery {
                channel: Channel::Email,
                recipient: email.as_str().to_owned(),
                recipient_user: Some(u.username.as_str().to_owned()),
                subject: title,
                body,
            });
        }
    }
    for hook in config
        .webhooks
        .iter()
        .filter(|h| matches(&h.events, &n.action))
    {
        let doc = subject.webhook(plant);
        out.push(NewDelivery {
            channel: Channel::Webhook,
            recipient: hook.url.as_str().to_owned(),
            recipient_user: None,
            subject: doc["summary"].as_str().unwrap_or_default().to_owned(),
            body: doc.to_string(),
        });
    }
    Ok(out)
}

async fn created_details(store: &Store, grant: GrantId) -> Result<Option<Value>, StoreError> {
    let events = store
        .audit_events(&AuditQuery {
            grant_id: Some(grant.get()),
            action: Some("request.create".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    Ok(events
        .first()
        .and_then(|e| serde_json::from_str(&e.details).ok()))
}
