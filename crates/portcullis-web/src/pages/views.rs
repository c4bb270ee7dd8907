//! Pieces several pages show: a request's state, window, ports and countdown.

use std::collections::BTreeSet;

use maud::{Markup, html};
use portcullis_core::{Access, AccessRequest, DevicePolicy, Mode, Port, RequestState, Timestamp};
use portcullis_store::RequestRecord;

use super::time::{PlantTime, deadline, left};

pub(crate) fn ports(p: &BTreeSet<Port>) -> String {
    Port::join(p).replace(',', ", ")
}

/// A request's access; `write` stands out, as a supervisor must see it before approving.
pub(crate) fn access(a: Access) -> Markup {
    html! {
        @match a {
            Access::Write => strong.access-write data-testid="access" { "write" },
            Access::Read => span data-testid="access" { "read" },
        }
    }
}

/// Each port of a request with what it runs under by the device's policy, decoded ports only:
/// `502 (modbus, read-only), 80`.
pub(crate) fn port_modes(r: &AccessRequest, policy: &DevicePolicy) -> Markup {
    html! {
        @for (i, p) in r.ports.iter().enumerate() {
            @if i > 0 { ", " }
            @let mode = policy.mode(*p, r.access);
            span data-testid="port-mode" data-port=(p) data-mode=(mode.as_str()) {
                (p)
                @match mode {
                    Mode::Raw => {},
                    Mode::Modbus(Access::Write) => { " (" strong.access-write { (mode.describe()) } ")" },
                    Mode::Modbus(Access::Read) => { " (" (mode.describe()) ")" },
                }
            }
        }
    }
}

/// A device's ports with the Modbus ones named: `502 (modbus), 80`.
pub(crate) fn policy_ports(p: &DevicePolicy) -> String {
    p.allowed_ports
        .iter()
        .map(|port| match p.protocols.get(port) {
            Some(proto) => format!("{port} ({proto})"),
            None => port.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn state(s: RequestState) -> Markup {
    html! { span class={ "state state-" (s) } data-testid="state" { (s) } }
}

/// The window in plant time, and for a live grant the time left (counted down by app.js).
pub(crate) fn window(rec: &RequestRecord, tz: &PlantTime, now: Timestamp) -> Markup {
    let w = &rec.request.window;
    html! {
        span data-testid="window-start" { (tz.show(w.start)) }
        " – "
        span data-testid="window-end" { (tz.show(w.end)) }
        @if rec.request.state == RequestState::Active {
            br;
            span.countdown data-testid="countdown" data-deadline=(deadline(w.end))
                data-seconds=(w.remaining(now).as_secs()) {
                (left(w.remaining(now)))
            }
        }
    }
}

/// A table of requests; `link` makes the id a link to the detail page.
pub(crate) fn requests_table(
    list: &[RequestRecord],
    tz: &PlantTime,
    now: Timestamp,
    show_requester: bool,
) -> Markup {
    html! {
        @if list.is_empty() {
            p.muted data-testid="empty" { "Nothing here." }
        } @else {
            table data-testid="requests" {
                thead { tr {
                    th { "#" }
                    @if show_requester { th { "Requester" } }
                    th { "Device" } th { "Ports" } th { "Access" } th { "Window (" (tz.name()) ")" }
                    th { "State" } th { "Approvals" } th { "Reason" } th { "Ticket" }
                } }
                tbody {
                    @for r in list {
                        tr data-testid="request-row" data-id=(r.id) {
                            td { a href={ "/requests/" (r.id) } { (r.id) } }
                            @if show_requester {
                                td { (r.request.requester.as_str()) " (" (r.request.org.as_str()) ")" }
                            }
                            td { (r.request.device.as_str()) }
                            td { (ports(&r.request.ports)) }
                            td { (access(r.request.access)) }
                            td { (window(r, tz, now)) }
                            td {
                                (state(r.request.state))
                                @if let Some(why) = &r.request.closing_reason {
                                    br; span.muted { (why) }
                                }
                            }
                            td { (r.request.approvals.len()) }
                            td data-testid="reason" { (r.request.reason) }
                            td { (r.request.ticket.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}
