//! Sites and their connectors (docs/decisions/0007-site-connectors.md): the list supervisors,
//! admins and auditors see, the admin's registration, token and revocation, and the enrollment a
//! connector makes with its one-time token (no login: the token is the credential).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use portcullis_api_types::schema::Name;
use portcullis_api_types::sites::{
    ConnectorCertificate, Presence, Site, SiteEnrollment, SiteList, SiteStatus,
};
use portcullis_auth::token::thumbprint;
use portcullis_core::{Role, SiteName, Timestamp};
use portcullis_net::NetError;
use portcullis_net::devca::sign_site_csr;
use portcullis_store::{BAD_SITE_TOKEN, ConnectorPresence, SiteRecord, SiteToken, StoreError};
use serde::Deserialize;

use crate::api::auth::rate_limit;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, Authed, ClientAddr};
use crate::state::AppState;

/// How long a connector's certificate is valid (the design's "1 year"); it enrolls again with a
/// new token before then.
pub const SITE_CERT_DAYS: u32 = 365;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteBody {
    #[schema(value_type = Name)]
    pub(crate) name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConnectorEnrollBody)]
pub struct EnrollBody {
    token: String,
    /// PEM PKCS#10 request for a P-256 ECDSA or Ed25519 key
    csr: String,
}

impl std::fmt::Debug for EnrollBody {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollBody").finish_non_exhaustive()
    }
}

/// The command that enrolls a connector with `token` against this service.
pub(crate) fn enroll_command(public_origin: &str, token: &str) -> String {
    format!("portcullis connector enroll --url {public_origin} --token {token}")
}

/// A site as the API shows it: the record, its status and when it was last heard from.
pub(crate) fn site_view(site: &SiteRecord, now: Timestamp) -> Site {
    // Destructured without `..`, so a new column is a decision here.
    let SiteRecord {
        name,
        created_at,
        created_by,
        enrolled_at,
        cert_fingerprint,
        cert_not_after,
        revoked_at,
        presence,
    } = site;
    Site {
        name: name.clone(),
        created_at: *created_at,
        created_by: created_by.clone(),
        enrolled_at: *enrolled_at,
        cert_fingerprint: cert_fingerprint.clone(),
        cert_not_after: *cert_not_after,
        revoked_at: *revoked_at,
        presence: presence.as_ref().map(
            |ConnectorPresence {
                 connection_id,
                 relay,
                 source,
                 connected_at,
                 last_seen_at,
             }| Presence {
                connection_id: connection_id.clone(),
                relay: relay.clone(),
                source: source.clone(),
                connected_at: *connected_at,
                last_seen_at: *last_seen_at,
            },
        ),
        status: match site.status(now) {
            portcullis_store::SiteStatus::NotEnrolled => SiteStatus::NotEnrolled,
            portcullis_store::SiteStatus::Online => SiteStatus::Online,
            portcullis_store::SiteStatus::Offline => SiteStatus::Offline,
            portcullis_store::SiteStatus::Revoked => SiteStatus::Revoked,
        },
        last_seen: site.last_seen(),
    }
}

fn issued(state: &AppState, site: &str, token: &SiteToken) -> SiteEnrollment {
    SiteEnrollment {
        site: site.to_owned(),
        enrollment_token: token.token.clone(),
        expires_at: token.expires_at,
        enroll_command: enroll_command(&state.0.config.public_origin, &token.token),
    }
}

async fn list(state: &AppState) -> ApiResult<Json<SiteList>> {
    let now = state.0.clock.now();
    let sites = state.0.store.list_sites().await?;
    Ok(Json(SiteList {
        sites: sites.iter().map(|s| site_view(s, now)).collect(),
    }))
}

/// `GET /api/v1/sites`: every site and whether its connector is online.
#[utoipa::path(get, path = "/api/v1/sites",
    summary = "Sites and whether their connectors are online (supervisors, admins, auditors)",
    responses((status = 200, description = "sites", body = SiteList)),
    security(("bearer" = [])))]
pub async fn sites(State(state): State<AppState>, authed: Authed) -> ApiResult<Json<SiteList>> {
    authed.require(&[Role::Supervisor, Role::Admin, Role::Auditor])?;
    list(&state).await
}

/// `GET /api/v1/admin/sites`.
#[utoipa::path(get, path = "/api/v1/admin/sites", summary = "Sites",
    responses((status = 200, description = "sites", body = SiteList)),
    security(("bearer" = [])))]
pub async fn admin_sites(
    State(state): State<AppState>,
    authed: Authed,
) -> ApiResult<Json<SiteList>> {
    authed.require(&[Role::Admin])?;
    list(&state).await
}

/// `POST /api/v1/admin/sites`: registers a site; the answer holds its one-time token.
#[utoipa::path(post, path = "/api/v1/admin/sites",
    summary = "Register a site (returns its one-time enrollment token)",
    request_body = SiteBody,
    responses((status = 201, description = "The site and its enrollment token, shown this once", body = SiteEnrollment)),
    security(("bearer" = [])))]
pub async fn add_site(
    State(state): State<AppState>,
    authed: Authed,
    ApiJson(b): ApiJson<SiteBody>,
) -> ApiResult<(StatusCode, Json<SiteEnrollment>)> {
    authed.require(&[Role::Admin])?;
    let name = SiteName::parse(&b.name)?;
    let (rec, token) = state.0.store.add_site(&authed.actor(), &name).await?;
    Ok((StatusCode::CREATED, Json(issued(&state, &rec.name, &token))))
}

/// `POST /api/v1/admin/sites/{name}/token`: a new one-time token (to enroll a replacement box).
#[utoipa::path(post, path = "/api/v1/admin/sites/{name}/token",
    summary = "A new one-time enrollment token (replaces an unused one)",
    params(("name" = Name, Path)),
    responses((status = 200, description = "The new enrollment token, shown this once", body = SiteEnrollment)),
    security(("bearer" = [])))]
pub async fn new_token(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<SiteEnrollment>> {
    authed.require(&[Role::Admin])?;
    let name = SiteName::parse(&name)?;
    let token = state.0.store.new_site_token(&authed.actor(), &name).await?;
    Ok(Json(issued(&state, name.as_str(), &token)))
}

/// `POST /api/v1/admin/sites/{name}/revoke`: for good; its connector is cut off at once.
#[utoipa::path(post, path = "/api/v1/admin/sites/{name}/revoke",
    summary = "Revoke a site for good: its connector is cut off",
    params(("name" = Name, Path)),
    responses((status = 200, description = "The site", body = Site)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Site>> {
    authed.require(&[Role::Admin])?;
    let name = SiteName::parse(&name)?;
    let store = &state.0.store;
    store.revoke_site(&authed.actor(), &name).await?;
    let rec = store
        .site(name.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("site '{name}' does not exist")))?;
    Ok(Json(site_view(&rec, state.0.clock.now())))
}

/// `POST /api/v1/connector/enroll`: trades a one-time token and a certificate signing request
/// for the site's certificate, signed by the site CA, and where the relay is.
#[utoipa::path(post, path = "/api/v1/connector/enroll",
    summary = "A site connector trades its one-time token and a PKCS#10 request for its certificate",
    request_body = EnrollBody,
    responses((status = 200, description = "The site's certificate and where the relay is", body = ConnectorCertificate)))]
#[tracing::instrument(skip_all, fields(source = ?addr.0))]
pub async fn enroll(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<EnrollBody>,
) -> ApiResult<Json<ConnectorCertificate>> {
    rate_limit(&state, &addr)?;
    let config = &state.0.config;
    let Some(ca) = config.site_ca.as_deref() else {
        tracing::error!("a connector tried to enroll, but this service has no site CA");
        return Err(ApiError::Unavailable);
    };
    let store = &state.0.store;
    let site = store
        .site_for_token(&body.token)
        .await?
        .ok_or_else(bad_token)?;
    let signed = sign_site_csr(ca, &body.csr, &site, SITE_CERT_DAYS).map_err(|e| match e {
        NetError::InvalidRequest { .. } => ApiError::BadRequest(e.to_string()),
        e => {
            tracing::error!(error = %e, "signing a site certificate failed");
            ApiError::Internal
        }
    })?;
    let micros = signed.not_after.unix_timestamp_nanos() / 1_000;
    let not_after = Timestamp::from_unix_micros(i64::try_from(micros).unwrap_or(i64::MAX))?;
    let site = store
        .enroll_site(
            &body.token,
            &thumbprint(signed.cert_der.as_ref()),
            not_after,
            addr.source(),
        )
        .await
        .map_err(|e| match e {
            // Used by a parallel enrollment between the check above and now.
            StoreError::Forbidden(_) => bad_token(),
            e => e.into(),
        })?;
    tracing::info!(site = %site, "a site connector enrolled");
    Ok(Json(ConnectorCertificate {
        site,
        certificate: signed.cert_pem,
        ca: ca.cert_pem().to_owned(),
        relay: config.relay_addr.clone(),
        relay_ca: config.relay_ca_pem.clone(),
        not_after,
    }))
}

fn bad_token() -> ApiError {
    ApiError::Forbidden(BAD_SITE_TOKEN.into())
}
