//! Notifications (issue 15): the outbox's notices become e-mails (SMTP, STARTTLS) and signed
//! webhook posts, with retries and backoff; vendors hear of their window's end 15 and 5 minutes
//! before it. Routing and messages are decided here; which events notify, the signature and the
//! backoff are `portcullis_core::notify`; the outbox tables are `portcullis_store`.
#![forbid(unsafe_code)]

pub mod config;
mod email;
pub mod message;
mod route;
mod webhook;
pub mod window;
mod worker;

pub use config::{NotificationsFile, NotifyConfig, SmtpFile, WebhookFile};
pub use worker::{Metrics, Notifier, POLL};
