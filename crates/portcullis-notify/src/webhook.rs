//! Webhooks: a JSON POST over HTTPS, signed (`portcullis_core::notify::signature`).

use std::time::Duration;

use portcullis_core::notify::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

use crate::config::WebhookConfig;

const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// One configured receiver and the HTTPS client that trusts what it should.
#[derive(Clone)]
pub struct Hook {
    pub url: reqwest::Url,
    secret: Vec<u8>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl Hook {
    pub fn new(c: &WebhookConfig) -> anyhow::Result<Hook> {
        let mut b = reqwest::Client::builder()
            .https_only(true)
            .timeout(POST_TIMEOUT)
            // A receiver's redirect could send the signed body elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &c.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| anyhow::anyhow!("[[webhook]] {} ca_file: {e}", c.url))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(Hook {
            url: c.url.clone(),
            secret: c.secret.clone(),
            client: b
                .build()
                .map_err(|e| anyhow::anyhow!("[[webhook]] {}: {e}", c.url))?,
        })
    }

    /// Posts `body`, signed at `unix_now`; a status other than 2xx is a failure.
    pub async fn post(
        &self,
        delivery: i64,
        action: &str,
        body: &str,
        unix_now: i64,
    ) -> Result<(), String> {
        let r = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, unix_now.to_string())
            .header(
                SIGNATURE_HEADER,
                sign(&self.secret, unix_now, body.as_bytes()),
            )
            .header("x-portcullis-event", action)
            .header("x-portcullis-delivery", delivery.to_string())
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| format!("POST {}: {}", self.url, error_chain(&e)))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "POST {}: the receiver answered {}",
                self.url,
                r.status()
            ))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
