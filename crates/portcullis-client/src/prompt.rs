//! Asking the person at the keyboard, or reading a script's lines.
//!
//! On a terminal, prompts go to stderr (stdout stays for results), passwords are read without
//! echo, and codes with echo. When stdin is not a terminal, each answer is one line of stdin, in
//! the order the command asks (for `login`: username if `--username` is absent, then password,
//! then the authenticator code), and no prompt is printed.

use std::collections::VecDeque;
use std::io::{self, BufRead as _, IsTerminal as _, Write as _};

use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error(
        "standard input ended before the {0} (when stdin is not a terminal, each answer is one line)"
    )]
    Ended(&'static str),
    #[error("cannot read the {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the {0} is empty")]
    Empty(&'static str),
}

#[derive(Debug)]
enum Source {
    Terminal,
    Piped,
    /// Fixed answers, for tests.
    Scripted(VecDeque<String>),
}

/// Where answers come from.
#[derive(Debug)]
pub struct Prompt {
    source: Source,
}

impl Prompt {
    /// The process's stdin: a terminal, or lines from a pipe or file.
    pub fn stdin() -> Self {
        let source = if io::stdin().is_terminal() {
            Source::Terminal
        } else {
            Source::Piped
        };
        Self { source }
    }

    /// Fixed answers, given in order.
    pub fn scripted<I: IntoIterator<Item = S>, S: Into<String>>(answers: I) -> Self {
        Self {
            source: Source::Scripted(answers.into_iter().map(Into::into).collect()),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.source, Source::Terminal)
    }

    /// A visible answer (username, authenticator code), trimmed. `label` is the prompt shown on
    /// a terminal; `what` names the answer in errors.
    pub fn line(&mut self, label: &str, what: &'static str) -> Result<String, PromptError> {
        let text = match &mut self.source {
            Source::Terminal => {
                let mut err = io::stderr().lock();
                let _ = write!(err, "{label}");
                let _ = err.flush();
                read_stdin_line(what)?
            }
            Source::Piped => read_stdin_line(what)?,
            Source::Scripted(lines) => lines.pop_front().ok_or(PromptError::Ended(what))?,
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(PromptError::Empty(what));
        }
        Ok(t.to_owned())
    }

    /// A secret answer (password): no echo on a terminal; surrounding line breaks removed but
    /// spaces kept (they may be part of a passphrase).
    pub fn secret(
        &mut self,
        label: &str,
        what: &'static str,
    ) -> Result<Zeroizing<String>, PromptError> {
        let text = Zeroizing::new(match &mut self.source {
            Source::Terminal => rpassword::prompt_password(label)
                .map_err(|source| PromptError::Io { what, source })?,
            Source::Piped => read_stdin_line(what)?,
            Source::Scripted(lines) => lines.pop_front().ok_or(PromptError::Ended(what))?,
        });
        let t = text.trim_end_matches(['\r', '\n']);
        if t.is_empty() {
            return Err(PromptError::Empty(what));
        }
        Ok(Zeroizing::new(t.to_owned()))
    }
}

fn read_stdin_line(what: &'static str) -> Result<String, PromptError> {
    let mut line = String::new();
    match io::stdin().lock().read_line(&mut line) {
        Ok(0) => Err(PromptError::Ended(what)),
        Ok(_) => Ok(line),
        Err(source) => Err(PromptError::Io { what, source }),
    }
}

/// An authenticator code as typed (`123 456`, `123456`) in the form the API takes, or an error
/// that says what a code looks like, before any network call.
pub fn totp_code(text: &str) -> Result<String, String> {
    let code: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err("an authenticator code is the 6 digits your authenticator app shows".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_answers_come_in_order_and_running_out_is_an_error() {
        let mut p = Prompt::scripted(["vera", "a long pass phrase ", "123456"]);
        assert_eq!(p.line("username: ", "username").unwrap(), "vera");
        assert_eq!(
            p.secret("password: ", "password").unwrap().as_str(),
            "a long pass phrase "
        );
        assert_eq!(p.line("code: ", "code").unwrap(), "123456");
        let e = p.line("code: ", "authenticator code").unwrap_err();
        assert!(
            e.to_string()
                .contains("ended before the authenticator code")
        );
    }

    #[test]
    fn empty_answers_are_refused() {
        let mut p = Prompt::scripted(["  ", ""]);
        assert!(matches!(p.line("", "username"), Err(PromptError::Empty(_))));
        assert!(matches!(
            p.secret("", "password"),
            Err(PromptError::Empty(_))
        ));
    }

    #[test]
    fn codes_are_six_digits_with_spaces_allowed() {
        assert_eq!(totp_code("123 456").unwrap(), "123456");
        assert_eq!(totp_code(" 012345\n").unwrap(), "012345");
        for bad in ["12345", "1234567", "12a456", ""] {
            assert!(totp_code(bad).is_err(), "{bad}");
        }
    }
}
