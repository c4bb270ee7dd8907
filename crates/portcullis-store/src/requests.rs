//! Access requests and grants. The rules live in `portcullis_core::request`; this module loads
//! a request under the chain lock, lets the core decide, and writes the outcome with its audit
//! event in the same transaction.

use std::collections::BTreeSet;

use portcullis_core::request::{Actor, Narrowing, TransitionError};
use portcullis_core::{
    Access, AccessRequest, Approval, DeviceName, DevicePolicy, GrantId, Mode, OrgName, Port,
    RequestState, Timestamp, Username, Window,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::relay::GrantChange;
use crate::users::UserRecord;
use crate::write::WriteTx;
use crate::{AuditActor, Store, StoreError};

/// A stored request: its id and its state as of the read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestRecord {
    pub id: i64,
    #[serde(flatten)]
    pub request: AccessRequest,
    /// When the broker first saw the grant ended by time (state `expired` persisted, issue 12);
    /// `None` while it has not ended or when it ended otherwise (denied, revoked).
    pub ended_at: Option<Timestamp>,
}

/// Which requests to list. Empty: all.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only this user's own requests (vendors see nothing else).
    pub requester: Option<Username>,
    pub state: Option<RequestState>,
}

/// What a vendor asks for.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub device: DeviceName,
    pub ports: BTreeSet<Port>,
    /// `None`: read, the default.
    pub access: Option<Access>,
    pub window: Window,
    pub reason: String,
    pub ticket: Option<String>,
}

impl From<TransitionError> for StoreError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::Forbidden(m) => StoreError::Forbidden(m),
            TransitionError::SelfApproval => StoreError::Forbidden(e.to_string()),
            TransitionError::Conflict(m) => StoreError::Conflict(m),
            TransitionError::Invalid(v) => StoreError::Invalid(v),
        }
    }
}

fn actor(user: &UserRecord) -> Actor {
    Actor {
        username: user.username.clone(),
        role: user.role,
    }
}

const REQUEST_COLUMNS: &str = "r.id, u.username AS requester, o.name AS org, d.name AS device, \
    r.ports, r.access, r.window_start, r.window_end, r.reason, r.ticket, r.state, r.closing_reason, \
    c.username AS closed_by, r.created_at, r.ended_at";
const REQUEST_FROM: &str = "FROM access_requests r JOIN users u ON u.id = r.requester_id \
    JOIN orgs o ON o.id = r.org_id JOIN devices d ON d.id = r.device_id \
    LEFT JOIN users c ON c.id = r.closed_by";

impl Store {
    /// A vendor asks for access; the device's policy is checked now.
    pub async fn create_request(
        &self,
        by: &AuditActor,
        requester: &UserRecord,
        new: &NewRequest,
    ) -> Result<RequestRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let device = crate::devices::load_device(tx.conn(), &new.device)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("device '{}' does not exist", new.device))
            })?;
        let req = AccessRequest::submit(
            &actor(requester),
            requester.org.as_ref(),
            &new.device,
            &device.policy,
            new.ports.clone(),
            new.access,
            new.window,
            &new.reason,
            new.ticket.as_deref(),
            tx.now(),
        )?;
        let org_id = crate::orgs::org_id(tx.conn(), &req.org).await?;
        let device_id = crate::devices::find_device_id(tx.conn(), &new.device)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("device '{}' does not exist", new.device))
            })?;
        let now = tx.now().to_rfc3339();
        let row = sqlx::query(
            "INSERT INTO access_requests (requester_id, org_id, device_id, ports, window_start, window_end, \
             reason, ticket, state, created_at, updated_at, access) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) RETURNING id",
        )
        .bind(requester.id)
        .bind(org_id)
        .bind(device_id)
        .bind(Port::join(&req.ports))
        .bind(req.window.start.to_rfc3339())
        .bind(req.window.end.to_rfc3339())
        .bind(req.reason.clone())
        .bind(req.ticket.clone())
        .bind(req.state.as_str())
        .bind(now)
        .bind(req.access.as_str())
        .fetch_one(tx.conn())
        .await?;
        let id: i64 = row.try_get("id")?;
        let details = serde_json::json!({
            "device": req.device, "ports": req.ports, "start": req.window.start, "end": req.window.end,
            "reason": req.reason, "ticket": req.ticket, "access": req.access,
            "modes": modes(&device.policy, &req),
        });
        tx.audit(
            &by.draft("request.create")
                .target(format!("device:{}", req.device))
                .grant(GrantId::new(id))
                .details(details),
        )
        .await?;
        tx.commit().await?;
        Ok(RequestRecord {
            id,
            request: req,
            ended_at: None,
        })
    }

    /// A supervisor approves, maybe narrowing. With dual approval the request stays `requested`
    /// until a second, different supervisor approves.
    pub async fn approve_request(
        &self,
        by: &AuditActor,
        approver: &UserRecord,
        id: i64,
        narrowing: &Narrowing,
    ) -> Result<RequestRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut rec = load_request(tx.conn(), id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let device = crate::devices::load_device(tx.conn(), &rec.request.device)
            .await?
            .ok_or_else(|| not_found(id))?;
        let required = device.policy.approvals_required;
        let asked = rec.request.access;
        rec.request
            .approve(&actor(approver), &device.policy, narrowing, tx.now())?;
        sqlx::query(
            "INSERT INTO approvals (request_id, approver_id, approved_at) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(approver.id)
        .bind(tx.now().to_rfc3339())
        .execute(tx.conn())
        .await?;
        save(&mut tx, &rec, None).await?;
        let r = &rec.request;
        // The requester and org are named so that an auditor reading this one event knows who
        // was given access to what, without joining it to the `request.create` event.
        let mut details = serde_json::json!({
            "requester": r.requester, "org": r.org,
            "device": r.device, "ports": r.ports, "start": r.window.start, "end": r.window.end,
            "approvals": r.approvals.len(), "approvals_required": required, "state": r.state,
            "access": r.access, "modes": modes(&device.policy, r),
        });
        if asked != r.access {
            details["access_requested"] = asked.as_str().into();
        }
        tx.audit(
            &by.draft("request.approve")
                .target(format!("device:{}", r.device))
                .grant(GrantId::new(id))
                .details(details),
        )
        .await?;
        tx.commit().await?;
        Ok(rec)
    }

    pub async fn deny_request(
        &self,
        by: &AuditActor,
        supervisor: &UserRecord,
        id: i64,
        reason: &str,
    ) -> Result<RequestRecord, StoreError> {
        self.close_request(by, supervisor, id, reason, Closing::Deny)
            .await
    }

    /// Ends a grant before its window does. The relay learns of it through grant-change
    /// notifications (issue 4).
    pub async fn revoke_grant(
        &self,
        by: &AuditActor,
        revoker: &UserRecord,
        id: i64,
        reason: &str,
    ) -> Result<RequestRecord, StoreError> {
        self.close_request(by, revoker, id, reason, Closing::Revoke)
            .await
    }

    /// Deny or revoke: the core decides, the outcome and its audit event commit together.
    async fn close_request(
        &self,
        by: &AuditActor,
        who: &UserRecord,
        id: i64,
        reason: &str,
        how: Closing,
    ) -> Result<RequestRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut rec = load_request(tx.conn(), id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let (r, now) = (&mut rec.request, tx.now());
        let action = match how {
            Closing::Deny => r.deny(&actor(who), reason, now).map(|()| "request.deny"),
            Closing::Revoke => r.revoke(&actor(who), reason, now).map(|()| "grant.revoke"),
        }?;
        save(&mut tx, &rec, Some(who.id)).await?;
        let r = &rec.request;
        let details = serde_json::json!({ "device": r.device, "reason": r.closing_reason });
        tx.audit(
            &by.draft(action)
                .target(format!("device:{}", r.device))
                .grant(GrantId::new(id))
                .details(details),
        )
        .await?;
        if matches!(how, Closing::Revoke) {
            tx.notify(GrantChange::Grant(GrantId::new(id))).await?;
        }
        tx.commit().await?;
        Ok(rec)
    }

    /// One request, its state as of now. A window seen ended here for the first time is
    /// persisted as ended (issue 12), so no later clock reading can re-open it.
    pub async fn request(&self, id: i64) -> Result<Option<RequestRecord>, StoreError> {
        let mut conn = self.shared.pool.acquire().await?;
        let now = self.now();
        let Some(mut rec) = load_request(&mut conn, id).await? else {
            return Ok(None);
        };
        drop(conn);
        if rec.request.ended_by_time(now) {
            self.persist_end_quietly(id).await;
            // Read again: the record says when the end was persisted (by us or by whoever was
            // first), as every later read will.
            let mut conn = self.shared.pool.acquire().await?;
            if let Some(again) = load_request(&mut conn, id).await? {
                rec = again;
            }
        }
        rec.request.tick(now);
        Ok(Some(rec))
    }

    /// Persists an end seen by a read. A failure (database busy, disk full) does not fail the
    /// read: the state read says `expired` anyway, and the sweep writes it later.
    async fn persist_end_quietly(&self, id: i64) {
        if let Err(e) = self.persist_end(id, crate::ends::EndObserver::Read).await {
            tracing::warn!("cannot persist the end of grant {id} yet: {e}");
        }
    }

    /// Requests, newest first (at most 500), each with its state as of now.
    pub async fn list_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let mut conn = self.shared.pool.acquire().await?;
        // The stored state lags the clock (approved -> active -> expired happen by time alone), so
        // SQL narrows to the stored states that can read as the wanted one, before the limit;
        // the exact state is decided below with `tick`.
        let mut sql = format!("SELECT {REQUEST_COLUMNS} {REQUEST_FROM} WHERE 1 = 1");
        if filter.requester.is_some() {
            sql += " AND u.username = $1";
        }
        if let Some(s) = filter.state {
            let stored = match s {
                RequestState::Requested => "'requested'",
                RequestState::Approved | RequestState::Active => "'approved', 'active'",
                RequestState::Expired => "'requested', 'approved', 'active', 'expired'",
                RequestState::Denied => "'denied'",
                RequestState::Revoked => "'revoked'",
            };
            sql += &format!(" AND r.state IN ({stored})");
            if s != RequestState::Expired && !s.is_final() {
                // Not yet ended: fixed-width UTC text orders like time.
                sql += if filter.requester.is_some() {
                    " AND r.window_end > $2"
                } else {
                    " AND r.window_end > $1"
                };
            }
        }
        sql += " ORDER BY r.id DESC LIMIT 500";
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        let now = self.now();
        if let Some(u) = &filter.requester {
            q = q.bind(u.as_str().to_owned());
        }
        if filter
            .state
            .is_some_and(|s| s != RequestState::Expired && !s.is_final())
        {
            q = q.bind(now.to_rfc3339());
        }
        let rows = q.fetch_all(&mut *conn).await?;
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        // One query for the approvals of the whole page, not one per row.
        let mut approvals = load_approvals_of(&mut conn, &ids).await?;
        drop(conn);
        // Ends seen here are persisted in one sweep after the page is built (one transaction,
        // not one per row); the page already shows them `expired`.
        let mut sweep = false;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut rec = request_from_row(row)?;
            rec.request.approvals = approvals.remove(&rec.id).unwrap_or_default();
            if rec.request.ended_by_time(now) {
                sweep = true;
            }
            rec.request.tick(now);
            if filter.state.is_none_or(|s| s == rec.request.state) {
                out.push(rec);
            }
        }
        if sweep && let Err(e) = self.sweep_ended().await {
            tracing::warn!("cannot persist grant ends yet: {e}");
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy)]
enum Closing {
    Deny,
    Revoke,
}

/// `{"502": "modbus-read"}`: what each decoded port of the request runs under, for the audit
/// record (raw TCP ports are not listed).
fn modes(policy: &DevicePolicy, r: &AccessRequest) -> serde_json::Value {
    r.ports
        .iter()
        .map(|p| (p.to_string(), policy.mode(*p, r.access)))
        .filter(|(_, m)| *m != Mode::Raw)
        .map(|(p, m)| (p, serde_json::Value::from(m.as_str())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn not_found(id: i64) -> StoreError {
    StoreError::NotFound(format!("request {id} does not exist"))
}

async fn save(
    tx: &mut WriteTx,
    rec: &RequestRecord,
    closed_by: Option<i64>,
) -> Result<(), StoreError> {
    let r = &rec.request;
    let now = tx.now().to_rfc3339();
    sqlx::query(
        "UPDATE access_requests SET ports = $1, window_start = $2, window_end = $3, state = $4, \
         closing_reason = $5, closed_by = COALESCE($6, closed_by), updated_at = $7, access = $9 \
         WHERE id = $8",
    )
    .bind(Port::join(&r.ports))
    .bind(r.window.start.to_rfc3339())
    .bind(r.window.end.to_rfc3339())
    .bind(r.state.as_str())
    .bind(r.closing_reason.clone())
    .bind(closed_by)
    .bind(now)
    .bind(rec.id)
    .bind(r.access.as_str())
    .execute(tx.conn())
    .await?;
    Ok(())
}

async fn load_request(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<Option<RequestRecord>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {REQUEST_COLUMNS} {REQUEST_FROM} WHERE r.id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut rec = request_from_row(&row)?;
    rec.request.approvals = load_approvals(conn, id).await?;
    Ok(Some(rec))
}

async fn load_approvals(conn: &mut AnyConnection, id: i64) -> Result<Vec<Approval>, StoreError> {
    let rows = sqlx::query(
        "SELECT u.username, a.approved_at FROM approvals a JOIN users u ON u.id = a.approver_id \
         WHERE a.request_id = $1 ORDER BY a.approved_at, u.username",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Approval {
                by: Username::parse(&r.try_get::<String, _>("username")?)?,
                at: Timestamp::parse_rfc3339(&r.try_get::<String, _>("approved_at")?)?,
            })
        })
        .collect()
}

/// The approvals of each of `ids` (at most the 500 a list returns), keyed by request id.
async fn load_approvals_of(
    conn: &mut AnyConnection,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, Vec<Approval>>, StoreError> {
    let mut by_request = std::collections::HashMap::new();
    if ids.is_empty() {
        return Ok(by_request);
    }
    let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT a.request_id, u.username, a.approved_at FROM approvals a \
         JOIN users u ON u.id = a.approver_id WHERE a.request_id IN ({}) \
         ORDER BY a.request_id, a.approved_at, u.username",
        marks.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    for r in q.fetch_all(conn).await? {
        let approval = Approval {
            by: Username::parse(&r.try_get::<String, _>("username")?)?,
            at: Timestamp::parse_rfc3339(&r.try_get::<String, _>("approved_at")?)?,
        };
        by_request
            .entry(r.try_get::<i64, _>("request_id")?)
            .or_insert_with(Vec::new)
            .push(approval);
    }
    Ok(by_request)
}

fn request_from_row(r: &AnyRow) -> Result<RequestRecord, StoreError> {
    let text = |c: &str| r.try_get::<String, _>(c);
    let ts =
        |c: &str| -> Result<Timestamp, StoreError> { Ok(Timestamp::parse_rfc3339(&text(c)?)?) };
    Ok(RequestRecord {
        id: r.try_get("id")?,
        request: AccessRequest {
            requester: Username::parse(&text("requester")?)?,
            org: OrgName::parse(&text("org")?)?,
            device: DeviceName::parse(&text("device")?)?,
            ports: Port::parse_list(&text("ports")?)?,
            access: text("access")?.parse()?,
            window: Window::new(ts("window_start")?, ts("window_end")?)?,
            reason: text("reason")?,
            ticket: r.try_get("ticket")?,
            created_at: ts("created_at")?,
            state: text("state")?.parse()?,
            approvals: Vec::new(),
            closing_reason: r.try_get("closing_reason")?,
            closed_by: r
                .try_get::<Option<String>, _>("closed_by")?
                .map(|u| Username::parse(&u))
                .transpose()?,
        },
        ended_at: r
            .try_get::<Option<String>, _>("ended_at")?
            .map(|t| Timestamp::parse_rfc3339(&t))
            .transpose()?,
    })
}
