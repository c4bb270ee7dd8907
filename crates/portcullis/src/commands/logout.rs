//! `portcullis logout [--everywhere]`: ends the stored CLI session on the broker, then forgets
//! it. The broker also refuses the relay tokens issued before; `--everywhere` ends every
//! session of the account and its live relay sessions (a running `portcullis connect` stops).
//!
//! The session file is removed only once the broker has ended the session (or says it was
//! over already): removing it while the broker still honours the token would tell the vendor
//! they are logged out when they are not.

use std::process::ExitCode;

use anyhow::Context as _;
use portcullis_client::api::{ApiClient, ApiError};
use portcullis_client::config::{ConfigDir, ConfigError};

use crate::cli::LogoutArgs;

pub async fn run(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let dir = ConfigDir::from_env()?;
    let stored = match dir.load_session() {
        Ok(s) => s,
        Err(ConfigError::NotLoggedIn) if !args.everywhere => {
            println!("not logged in; nothing to do");
            return Ok(ExitCode::SUCCESS);
        }
        Err(ConfigError::NotLoggedIn) => anyhow::bail!(
            "not logged in: log in with `portcullis login <broker-url>`, then run \
             `portcullis logout --everywhere`"
        ),
        Err(e) => return Err(e.into()),
    };
    let url = stored.broker_url.clone();
    let ended = match ApiClient::for_session(&stored) {
        Ok(api) if args.everywhere => api.logout_everywhere().await.map(Some),
        Ok(api) => api.logout().await.map(|()| None),
        Err(e) => Err(e),
    };
    match ended {
        Ok(count) => {
            dir.remove_session()
                .context("logged out on the broker, but cannot remove the session file")?;
            match count {
                Some(n) => println!(
                    "logged out of {url} everywhere: {n} session(s) ended, earlier relay tokens \
                     refused, live connections closed"
                ),
                None => println!("logged out of {url}; earlier relay tokens are refused"),
            }
            Ok(ExitCode::SUCCESS)
        }
        // The broker already ended it (expiry, an admin's reset): nothing left to end here.
        Err(ApiError::SessionExpired { .. }) if !args.everywhere => {
            dir.remove_session()
                .context("cannot remove the session file")?;
            println!("the session on {url} had already ended; forgot it");
            Ok(ExitCode::SUCCESS)
        }
        Err(ApiError::SessionExpired { .. }) => {
            dir.remove_session()
                .context("cannot remove the session file")?;
            anyhow::bail!(
                "the stored session on {url} has already ended, so it cannot end the others: log \
                 in again with `portcullis login {url}`, then run `portcullis logout --everywhere`"
            )
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "could not log out of {url}; the session is still stored and still valid there"
        ))),
    }
}
