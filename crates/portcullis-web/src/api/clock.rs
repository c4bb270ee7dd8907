//! The broker's clock health (issue 12): `GET /api/v1/admin/clock` shows what this process's
//! clock monitor sees; `POST /api/v1/admin/clock/ack` is an admin vouching for the wall clock
//! as it is now, which ends a clock anomaly (new relay tokens and sessions start again).

use axum::Json;
use axum::extract::State;
use portcullis_core::Role;

use crate::error::ApiResult;
use crate::extract::Authed;
use crate::state::AppState;

fn view(state: &AppState) -> serde_json::Value {
    let mut v = serde_json::to_value(state.0.store.clock_status()).unwrap_or_default();
    v["wall_clock"] = serde_json::to_value(state.0.clock.now()).unwrap_or_default();
    v
}

pub async fn status(
    State(state): State<AppState>,
    authed: Authed,
) -> ApiResult<Json<serde_json::Value>> {
    authed.require(&[Role::Admin])?;
    Ok(Json(view(&state)))
}

pub async fn ack(
    State(state): State<AppState>,
    authed: Authed,
) -> ApiResult<Json<serde_json::Value>> {
    authed.require(&[Role::Admin])?;
    let ev = state.0.store.acknowledge_clock(&authed.actor()).await?;
    let mut v = view(&state);
    v["ack_seq"] = ev.seq.into();
    Ok(Json(v))
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
