//! E-mail over SMTP (lettre), STARTTLS by default.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpTls};

/// How long one SMTP conversation may take before the try counts as failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from).finish()
    }
}

impl Mailer {
    pub fn new(c: &SmtpConfig) -> anyhow::Result<Mailer> {
        let tls = match c.tls {
            SmtpTls::None => Tls::None,
            mode => {
                let mut b = TlsParameters::builder(c.host.clone());
                if let Some(pem) = &c.ca_pem {
                    b = b.add_root_certificate(
                        Certificate::from_pem(pem)
                            .map_err(|e| anyhow::anyhow!("[smtp] ca_file: {e}"))?,
                    );
                }
                let params = b
                    .build_rustls()
                    .map_err(|e| anyhow::anyhow!("[smtp]: TLS settings: {e}"))?;
                if mode == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.clone())
            .port(c.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let (Some(u), Some(p)) = (&c.username, &c.password) {
            builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from: c.from.as_str().to_owned(),
        })
    }

    /// Sends one message; the error is a sentence for the outbox page.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let msg = Message::builder()
            .from(
                self.from
                    .parse()
                    .map_err(|e| format!("from address: {e}"))?,
            )
            .to(to.parse().map_err(|e| format!("address {to}: {e}"))?)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| format!("building the message: {e}"))?;
        self.transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}
