//! Where relay tokens come from: the broker, with a TOTP step-up when it asks for one.

use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::api::{ApiClient, ApiError, RelayTicket};
use crate::prompt::{Prompt, totp_code};

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    pub message: String,
    /// Worth trying again later (broker unreachable or overloaded); false for a definite "no"
    /// (grant not active, session expired, wrong code).
    pub transient: bool,
}

impl From<ApiError> for TokenError {
    fn from(e: ApiError) -> Self {
        TokenError {
            transient: e.is_transient(),
            message: e.to_string(),
        }
    }
}

/// Hands out relay tokens. Each call is for a new ephemeral client certificate, so every
/// connection (the first and each reconnect) gets a token of its own.
pub trait TokenSource {
    /// A token for `grant_id` bound to the certificate whose SHA-256 is `cert_sha256` (hex).
    fn relay_token(
        &mut self,
        grant_id: i64,
        cert_sha256: &str,
    ) -> impl Future<Output = Result<RelayTicket, TokenError>> + Send;
}

/// Tokens from the broker's API. When the broker wants a fresh authenticator code (the login
/// is older than it allows for tokens), asks for one through the prompt, sends the step-up and
/// tries once more.
#[derive(Debug)]
pub struct BrokerTokens {
    api: ApiClient,
    prompt: Arc<Mutex<Prompt>>,
}

impl BrokerTokens {
    pub fn new(api: ApiClient, prompt: Prompt) -> Self {
        Self {
            api,
            prompt: Arc::new(Mutex::new(prompt)),
        }
    }

    async fn ask_code(&self) -> Result<String, TokenError> {
        let prompt = self.prompt.clone();
        // Reading a terminal or a pipe blocks: keep it off the async workers, which are busy
        // carrying the tunnel's other connections meanwhile.
        let answer = tokio::task::spawn_blocking(move || {
            let mut p = prompt
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            p.line(
                "the broker asks for a fresh authenticator code: ",
                "authenticator code",
            )
        })
        .await
        .map_err(|e| TokenError {
            message: format!("cannot ask for the authenticator code: {e}"),
            transient: false,
        })?;
        let text = answer.map_err(|e| TokenError {
            message: e.to_string(),
            transient: false,
        })?;
        totp_code(&text).map_err(|message| TokenError {
            message,
            transient: false,
        })
    }
}

impl TokenSource for BrokerTokens {
    async fn relay_token(
        &mut self,
        grant_id: i64,
        cert_sha256: &str,
    ) -> Result<RelayTicket, TokenError> {
        match self.api.relay_token(grant_id, cert_sha256).await {
            Err(e) if e.is_step_up_required() => {
                let code = self.ask_code().await?;
                self.api.step_up(&code).await?;
                Ok(self.api.relay_token(grant_id, cert_sha256).await?)
            }
            other => Ok(other?),
        }
    }
}
