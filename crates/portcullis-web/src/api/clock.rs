//! The broker's clock health (issue 12): `GET /api/v1/admin/clock` shows what this process's
//! clock monitor sees; `POST /api/v1/admin/clock/ack` is an admin vouching for the wall clock
//! as it is now, which ends a clock anomaly (new relay tokens and sessions start again).

use axum::Json;
use axum::extract::State;
use portcullis_api_types::clock::{ClockHealth, ClockReadings, ClockStatus, TimeSync};
use portcullis_core::Role;

use crate::error::ApiResult;
use crate::extract::Authed;
use crate::state::AppState;

fn view(state: &AppState, ack_seq: Option<i64>) -> ClockStatus {
    // Destructured without `..`, so a new field of the monitor is a decision here.
    let portcullis_store::ClockStatus {
        monitored,
        state: health,
        tolerance_ms,
        deviation_ms,
        anomaly,
        anomaly_seq,
        time_sync,
    } = state.0.store.clock_status();
    ClockStatus {
        monitored,
        state: match health {
            "ok" => ClockHealth::Ok,
            "anomaly" => ClockHealth::Anomaly,
            // "unknown": no sample yet.
            _ => ClockHealth::Unknown,
        },
        tolerance_ms,
        deviation_ms,
        anomaly: anomaly.map(|r| ClockReadings {
            wall_before: r.wall_before,
            wall_after: r.wall_after,
            monotonic_elapsed_ms: r.monotonic_elapsed_ms,
            step_ms: r.step_ms,
            tolerance_ms: r.tolerance_ms,
        }),
        anomaly_seq,
        time_sync: time_sync.map(|t| TimeSync {
            synchronised: t.synchronised,
            source: t.source,
            detail: t.detail,
        }),
        wall_clock: state.0.clock.now(),
        ack_seq,
    }
}

#[utoipa::path(get, path = "/api/v1/admin/clock",
    summary = "The clock monitor: whether the wall clock agrees with the monotonic clock (admins)",
    responses((status = 200, description = "The clock's status", body = ClockStatus)),
    security(("bearer" = [])))]
pub async fn status(State(state): State<AppState>, authed: Authed) -> ApiResult<Json<ClockStatus>> {
    authed.require(&[Role::Admin])?;
    Ok(Json(view(&state, None)))
}

#[utoipa::path(post, path = "/api/v1/admin/clock/ack",
    summary = "Confirm the wall clock as it is now: ends a clock anomaly (admins)",
    responses((status = 200, description = "The status, and the seq of the clock.ack event", body = ClockStatus)),
    security(("bearer" = [])))]
pub async fn ack(State(state): State<AppState>, authed: Authed) -> ApiResult<Json<ClockStatus>> {
    authed.require(&[Role::Admin])?;
    let ev = state.0.store.acknowledge_clock(&authed.actor()).await?;
    Ok(Json(view(&state, Some(ev.seq))))
}

/// Prometheus lines for `/metrics`: 1 while the clocks disagree; whether the clock was found
/// synchronised at start (1, 0, or -1 for unknown).
pub fn metrics_text(state: &AppState) -> String {
    let s = state.0.store.clock_status();
    let anomaly = u8::from(s.state == "anomaly");
    let synced = match s.time_sync.as_ref().and_then(|t| t.synchronised) {
        Some(true) => 1,
        Some(false) => 0,
        None => -1,
    };
    format!(
        "# HELP portcullis_clock_anomaly The wall clock disagrees with the monotonic clock (no new tokens or sessions).\n\
         # TYPE portcullis_clock_anomaly gauge\nportcullis_clock_anomaly {anomaly}\n\
         # HELP portcullis_time_synchronised The clock was synchronised at start (1), not (0), unknown (-1).\n\
         # TYPE portcullis_time_synchronised gauge\nportcullis_time_synchronised {synced}\n"
    )
}
