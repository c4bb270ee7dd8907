//! The Modbus/TCP filter on a splice (issue 14): the relay's, and the site connector's second
//! line.
//!
//! [`ModbusFilter::requests`] sits on the direction towards the device. It decodes the client's
//! requests whatever the split of the bytes, lets [`Rules`] judge each one, forwards the ones
//! allowed and answers the others itself with their Modbus exception (same transaction and
//! unit), so a refused request never reaches the device and the client's connection stays up.
//! Bytes that are not Modbus/TCP end the connection (`protocol_violation`): the stream cannot be
//! resynchronised, and guessing would let a write through.
//!
//! [`ModbusFilter::responses`] sits on the direction towards the client when writes are granted:
//! it pairs each write with the device's answer (by transaction id) so the record says whether
//! the write took. It never changes the device's bytes; a response stream it cannot decode is
//! passed on as it is, and the writes still waiting are reported unanswered.
//!
//! What the filter saw goes to a [`ModbusObserver`] (the relay audits writes and refusals and
//! counts reads for the live view). The observer is called inline, per request: it must not
//! block.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use portcullis_core::modbus::{AduDecoder, Judgement, Request, Rules, exception_response};

use crate::splice::{Inspector, Meter, Splice, Verdict};

/// The reason of a [`crate::splice::SpliceEnd::Dropped`] the filter causes starts with this.
pub const PROTOCOL_VIOLATION: &str = "protocol_violation";

/// Writes waiting for the device's answer, per connection. A client that pipelines more than
/// this has the oldest reported unanswered.
const MAX_PENDING_WRITES: usize = 256;

/// A write the device has not answered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWrite {
    pub transaction: u16,
    pub request: Request,
    /// [`Request::write_values`].
    pub values: Vec<u16>,
}

/// How the device answered a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAnswer {
    /// A normal response: the write took.
    Done,
    /// An exception response with this code.
    Exception(u8),
    /// No answer before the connection ended (or the answers could not be read).
    None,
}

/// Where the filter reports what it saw. Called inline; must not block.
pub trait ModbusObserver: Send + Sync {
    /// One whole request from the client and the verdict on it; `values` are a write's values
    /// (empty otherwise).
    fn request(&self, request: &Request, judgement: Judgement, values: &[u16]);
    /// The device answered a forwarded write, or never will.
    fn write_answered(&self, write: &PendingWrite, answer: WriteAnswer);
}

/// One Modbus connection's filter: build it, give [`Self::requests`] (and, when writes may pass,
/// [`Self::responses`]) to the splice, and call [`Self::finish`] when the splice has ended.
pub struct ModbusFilter {
    rules: Rules,
    observer: Arc<dyn ModbusObserver>,
    pending: Arc<Mutex<VecDeque<PendingWrite>>>,
}

impl std::fmt::Debug for ModbusFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusFilter")
            .field("rules", &self.rules)
            .field("pending_writes", &lock(&self.pending).len())
            .finish_non_exhaustive()
    }
}

impl ModbusFilter {
    pub fn new(rules: Rules, observer: Arc<dyn ModbusObserver>) -> Self {
        Self {
            rules,
            observer,
            pending: Arc::default(),
        }
    }

    /// Whether any write can pass, so that answers are worth pairing.
    pub fn passes_writes(&self) -> bool {
        self.rules.access == portcullis_core::Access::Write
    }

    /// The inspector for the direction towards the device.
    pub fn requests(&self) -> Box<dyn Inspector> {
        Box::new(Requests {
            rules: self.rules.clone(),
            decoder: AduDecoder::new(),
            observer: self.observer.clone(),
            pending: self.pending.clone(),
        })
    }

    /// The inspector for the direction towards the client.
    pub fn responses(&self) -> Box<dyn Inspector> {
        Box::new(Responses {
            decoder: Some(AduDecoder::new()),
            observer: self.observer.clone(),
            pending: self.pending.clone(),
        })
    }

    /// `splice` with the filter on: requests always, answers when writes can pass.
    pub fn attach<'m, M: Meter>(&self, splice: Splice<'m, M>) -> Splice<'m, M> {
        let splice = splice.inspect_to_device(self.requests());
        if self.passes_writes() {
            splice.inspect_to_client(self.responses())
        } else {
            splice
        }
    }

    /// Reports the writes still waiting for an answer as unanswered.
    pub fn finish(self) {
        let waiting: Vec<PendingWrite> = lock(&self.pending).drain(..).collect();
        for w in &waiting {
            self.observer.write_answered(w, WriteAnswer::None);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Requests {
    rules: Rules,
    decoder: AduDecoder,
    observer: Arc<dyn ModbusObserver>,
    pending: Arc<Mutex<VecDeque<PendingWrite>>>,
}

impl Inspector for Requests {
    fn inspect(&mut self, chunk: &Bytes) -> Verdict {
        // The chunk can go on as it is when it starts on an ADU boundary, ends on one, and every
        // request in it passes: the common case of a client that writes one request at a time.
        let mut as_is = self.decoder.buffered() == 0;
        self.decoder.push(chunk);
        let mut forward = BytesMut::new();
        let mut answer = BytesMut::new();
        loop {
            let adu = match self.decoder.next_adu() {
                Ok(Some(adu)) => adu,
                Ok(None) => break,
                Err(e) => return Verdict::Drop(format!("{PROTOCOL_VIOLATION}: {e}")),
            };
            let request = match Request::parse(&adu) {
                Ok(r) => r,
                Err(e) => return Verdict::Drop(format!("{PROTOCOL_VIOLATION}: {e}")),
            };
            let judgement = self.rules.judge(&request);
            let values = match judgement {
                Judgement::Write => request.write_values(&adu),
                _ => Vec::new(),
            };
            self.observer.request(&request, judgement, &values);
            match judgement {
                Judgement::Read => {}
                Judgement::Write => {
                    let mut pending = lock(&self.pending);
                    if pending.len() == MAX_PENDING_WRITES
                        && let Some(oldest) = pending.pop_front()
                    {
                        self.observer.write_answered(&oldest, WriteAnswer::None);
                    }
                    pending.push_back(PendingWrite {
                        transaction: adu.transaction,
                        request,
                        values,
                    });
                }
                Judgement::Refused(why) => {
                    as_is = false;
                    let refusal = exception_response(&adu, why.exception_code());
                    let mut bytes = Vec::with_capacity(9);
                    refusal.encode(&mut bytes);
                    answer.extend_from_slice(&bytes);
                    continue;
                }
            }
            let mut bytes = Vec::with_capacity(adu.pdu.len() + 7);
            adu.encode(&mut bytes);
            forward.extend_from_slice(&bytes);
        }
        if as_is && self.decoder.buffered() == 0 {
            return Verdict::Pass;
        }
        Verdict::Split {
            forward: forward.freeze(),
            answer: answer.freeze(),
        }
    }
}

struct Responses {
    /// `None` once the device's bytes could not be decoded: they pass on unread.
    decoder: Option<AduDecoder>,
    observer: Arc<dyn ModbusObserver>,
    pending: Arc<Mutex<VecDeque<PendingWrite>>>,
}

impl Inspector for Responses {
    fn inspect(&mut self, chunk: &Bytes) -> Verdict {
        let Some(decoder) = &mut self.decoder else {
            return Verdict::Pass;
        };
        decoder.push(chunk);
        loop {
            match decoder.next_adu() {
                Ok(Some(adu)) => {
                    let mut pending = lock(&self.pending);
                    let Some(at) = pending
                        .iter()
                        .position(|w| w.transaction == adu.transaction)
                    else {
                        continue;
                    };
                    let Some(write) = pending.remove(at) else {
                        continue;
                    };
                    drop(pending);
                    let answer = match adu.pdu.as_slice() {
                        [f, code, ..] if f & 0x80 != 0 => WriteAnswer::Exception(*code),
                        _ => WriteAnswer::Done,
                    };
                    self.observer.write_answered(&write, answer);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(
                        "cannot read the device's Modbus answers ({e}); passing them on unread"
                    );
                    self.decoder = None;
                    break;
                }
            }
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests;
