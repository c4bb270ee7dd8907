//! Sites on pages: the admin's list (register, new token, revoke) and the connector status the
//! supervisor's queue shows. A one-time enrollment token is shown once, in the answer to the
//! POST that made it (never in a URL), with the command that uses it.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use maud::{Markup, html};
use portcullis_core::{Role, SiteName, Timestamp};
use portcullis_store::{SiteRecord, SiteStatus, SiteToken};

use super::error::{PageResult, rerender};
use super::form::{FormError, Input, Posted, Problem, field};
use super::layout::{Flash, csrf, error_box, page};
use super::session::Browser;
use super::time::PlantTime;
use crate::api::sites::{SiteBody, enroll_command};
use crate::error::ApiError;
use crate::state::AppState;

const SITE_NAME: Input = Input::new("name", "Name");

/// Characters of the certificate fingerprint lists show: enough to tell two apart by eye.
const FINGERPRINT_SHOWN: usize = 12;

/// A fresh token to hand over, shown on this one page.
struct Issued {
    site: String,
    token: SiteToken,
}

pub(crate) fn status_badge(s: SiteStatus) -> Markup {
    let class = format!("site site-{}", s.as_str().replace(' ', "-"));
    html! { span class=(class) data-testid="site-status" { (s) } }
}

fn last_seen(site: &SiteRecord, tz: &PlantTime) -> String {
    site.last_seen()
        .map_or_else(|| "never".into(), |t| tz.show(t))
}

/// The supervisor's view: each site, online or not, and when its connector was last heard from.
pub(crate) fn connectors_section(sites: &[SiteRecord], tz: &PlantTime, now: Timestamp) -> Markup {
    html! {
        h2 { "Site connectors" }
        @if sites.is_empty() {
            p.muted data-testid="no-sites" { "No sites are registered: the relay dials every device directly." }
        } @else {
            table data-testid="site-connectors" {
                thead { tr { th { "Site" } th { "Connector" } th { "Last seen (" (tz.name()) ")" } } }
                tbody { @for s in sites {
                    tr data-testid="connector-row" data-site=(s.name) {
                        td { (s.name) }
                        td { (status_badge(s.status(now))) }
                        td data-testid="last-seen" { (last_seen(s, tz)) }
                    }
                } }
            }
        }
    }
}

async fn sites_page(
    state: &AppState,
    who: &Browser,
    flash: Flash,
    issued: Option<Issued>,
    error: Option<(FormError, String)>,
) -> PageResult {
    let sites = state.0.store.list_sites().await?;
    let tz = PlantTime::of_reader(state, who);
    let now = state.0.clock.now();
    let origin = &state.0.config.public_origin;
    let (error, typed) = match error {
        Some((e, t)) => (Some(e), t),
        None => (None, String::new()),
    };
    let render = |problem: Option<&Problem>| {
        let body = html! {
            (error_box(problem))
            @if let Some(i) = &issued {
                div.flash data-testid="site-enrollment" {
                    p { "Enrollment token for site " strong { (i.site) } " — give it to whoever installs the connector, by a trusted channel. It is shown only now and works once, until " (tz.show(i.token.expires_at)) "." }
                    p { "Token: " span.secret data-testid="site-token" { (i.token.token) } }
                    p { "On the connector, run:" }
                    pre.command data-testid="site-enroll-command" { (enroll_command(origin, &i.token.token)) }
                }
            }
            @if sites.is_empty() {
                p.muted data-testid="no-sites" { "No sites yet. Devices whose site names a registered site are reached through that site's connector; others are dialed directly by the relay." }
            } @else {
                table data-testid="sites" {
                    thead { tr {
                        th { "Site" } th { "Status" } th { "Last seen" } th { "Enrolled" }
                        th { "Certificate" } th { "Actions" }
                    } }
                    tbody { @for s in &sites {
                        tr data-testid="site-row" data-site=(s.name) {
                            td { (s.name) }
                            td { (status_badge(s.status(now))) }
                            td { (last_seen(s, &tz)) }
                            td { (s.enrolled_at.map_or_else(|| "—".into(), |t| tz.show(t))) }
                            td.code title=(s.cert_fingerprint.as_deref().unwrap_or("")) {
                                @if let Some(fp) = &s.cert_fingerprint {
                                    (fp.chars().take(FINGERPRINT_SHOWN).collect::<String>()) "…"
                                    @if let Some(t) = s.cert_not_after { br; span.muted { "until " (tz.show(t)) } }
                                } @else { "—" }
                            }
                            td {
                                @if s.revoked_at.is_none() {
                                    form.inline method="post" action={ "/admin/sites/" (s.name) "/token" } {
                                        (csrf(who))
                                        button type="submit" data-testid={ "token-" (s.name) } { "New token" }
                                    }
                                    " "
                                    form.inline method="post" action={ "/admin/sites/" (s.name) "/revoke" } {
                                        (csrf(who))
                                        button.danger type="submit" data-testid={ "revoke-" (s.name) } { "Revoke" }
                                    }
                                } @else {
                                    span.muted { "revoked " (s.revoked_at.map(|t| tz.show(t)).unwrap_or_default()) }
                                }
                            }
                        }
                    } }
                }
                p.muted { "A new token lets a replacement connector enroll; its certificate then replaces the old one. Revoking is for good: the connector is cut off at once and the site's devices stay unreachable." }
            }
            h2 { "Register a site" }
            form.stack method="post" action="/admin/sites" data-testid="add-site-form" {
                (csrf(who))
                (field(SITE_NAME, " (as devices' Site field names it: lowercase letters, digits, '-', '_', '.')", html! {
                    input type="text" name=(SITE_NAME.name) value=(typed.as_str()) required maxlength="64" data-testid="site-name";
                }, problem))
                button type="submit" data-testid="add-site-submit" { "Register site" }
            }
        };
        page("Sites", who, flash, body)
    };
    Ok(match error {
        None => render(None).into_response(),
        Some(e) => rerender(e, render),
    })
}

pub(crate) async fn sites(State(state): State<AppState>, who: Browser, flash: Flash) -> PageResult {
    who.require(&[Role::Admin])?;
    sites_page(&state, &who, flash, None, None).await
}

pub(crate) async fn add_site(State(state): State<AppState>, p: Posted<SiteBody>) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let typed = p.form.name.as_str();
    let outcome = match SiteName::parse(typed) {
        Ok(name) => state
            .0
            .store
            .add_site(&who.0.actor(), &name)
            .await
            .map_err(|e| FormError::from_store(e, &[("site", SITE_NAME)])),
        Err(v) => Err(FormError::invalid(SITE_NAME, v.message)),
    };
    match outcome {
        Ok((rec, token)) => {
            let issued = Issued {
                site: rec.name,
                token,
            };
            sites_page(&state, who, Flash::default(), Some(issued), None).await
        }
        Err(e) => sites_page(&state, who, Flash::default(), None, Some((e, typed.into()))).await,
    }
}

pub(crate) async fn site_action(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    p: Posted,
) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let store = &state.0.store;
    let by = who.0.actor();
    let outcome = async {
        let name = SiteName::parse(&name)?;
        Ok(match action.as_str() {
            "revoke" => store.revoke_site(&by, &name).await.map(|()| None)?,
            "token" => Some(Issued {
                token: store.new_site_token(&by, &name).await?,
                site: name.to_string(),
            }),
            other => return Err(ApiError::NotFound(format!("no site action '{other}'"))),
        })
    }
    .await;
    match outcome {
        Ok(None) => Ok(Flash::redirect("/admin/sites", "site_revoked").into_response()),
        Ok(Some(issued)) => sites_page(&state, who, Flash::default(), Some(issued), None).await,
        Err(e) => {
            sites_page(
                &state,
                who,
                Flash::default(),
                None,
                Some((e.into(), String::new())),
            )
            .await
        }
    }
}
