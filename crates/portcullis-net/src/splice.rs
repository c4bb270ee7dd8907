//! The splice: one tunnelled TCP connection's bytes, both ways, between the side towards the
//! vendor (the *client* side) and the side towards the device (the *device* side). The relay,
//! the vendor client and the site connector all carry bytes with [`Splice::run`]:
//!
//! | who | client side | device side |
//! |---|---|---|
//! | vendor client | the local TCP connection | the QUIC stream to the relay |
//! | relay | the vendor's QUIC stream | the device's TCP socket, or the connector's QUIC stream |
//! | site connector | the relay's QUIC stream | the device's TCP socket |
//!
//! It passes half-closes along (TCP FIN <-> QUIC FIN), counts bytes, ends on an idle timeout or
//! when the caller's `until` future completes, and says why it ended ([`SpliceEnd`]). It ends
//! the device side first, one way for every cause other than a clean close
//! (docs/wire-protocol.md, "How a data stream ends"): a TCP socket is closed with an RST
//! (SO_LINGER 0), a QUIC stream is reset and stopped with [`CUT`].
//!
//! An optional [`Inspector`] per direction sees each chunk before it is forwarded and may pass
//! it, answer the sender itself, or drop the connection with a reason. Raw TCP uses none, and a
//! direction without one costs one branch per chunk.
//!
//! Memory per spliced connection: TCP reads go into one buffer handed to quinn whole
//! ([`read_tcp_chunk`]); QUIC chunks are written as quinn holds them. The rest is bounded by QUIC
//! flow control and the kernel's socket buffers.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use portcullis_core::wire::{Frame, FrameDecoder, RefusalCode};
use quinn::{RecvStream, SendStream, VarInt};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::frames::{FrameError, read_frame};
use crate::quic::read_tcp_chunk;

/// The QUIC application error code of a stream that is cut (RESET_STREAM and STOP_SENDING),
/// on every side.
pub const CUT: VarInt = VarInt::from_u32(1);

/// The most bytes read at once from a side, unless [`Splice::chunk_size`] says otherwise: the
/// memory a busy direction holds beyond what quinn and the kernel buffer.
pub const CHUNK: usize = 64 * 1024;

/// One side of a splice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Towards the vendor.
    Client,
    /// Towards the device.
    Device,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Side::Client => Side::Device,
            Side::Device => Side::Client,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Device => "device",
        }
    }
}

/// Why a splice ended.
#[derive(Debug, thiserror::Error)]
pub enum SpliceEnd {
    /// Both directions finished: each side closed its half (TCP FIN or QUIC FIN). `first` is
    /// the side that closed first.
    #[error("closed ({} first)", .first.as_str())]
    Closed { first: Side },
    /// A side reset: TCP RST, QUIC RESET_STREAM, or STOP_SENDING on what we were sending.
    #[error("the {} side reset the connection", .0.as_str())]
    Reset(Side),
    /// No byte moved either way for the idle timeout.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// The caller's `until` completed (the session or the connection carrying it ended).
    #[error("cut")]
    Cancelled,
    /// An I/O error other than a reset, with its cause.
    #[error("the {} side failed: {error}", .side.as_str())]
    Failed { side: Side, error: io::Error },
    /// The device side answered `Refused` instead of `Opened` ([`Peer::quic_awaiting_opened`]).
    #[error("refused: {message} ({code})")]
    Refused { code: RefusalCode, message: String },
    /// The device side sent a frame other than `Opened` or `Refused`, or a malformed one.
    #[error("the device side broke the protocol: {0}")]
    Protocol(String),
    /// An inspector ended the connection on bytes `from` that side.
    #[error("dropped bytes from the {} side: {reason}", .from.as_str())]
    Dropped { from: Side, reason: String },
}

impl SpliceEnd {
    /// True when both sides closed their halves: nothing was cut.
    pub fn is_clean(&self) -> bool {
        matches!(self, SpliceEnd::Closed { .. })
    }

    /// A short name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            SpliceEnd::Closed { .. } => "closed",
            SpliceEnd::Reset(Side::Client) => "client_reset",
            SpliceEnd::Reset(Side::Device) => "device_reset",
            SpliceEnd::Idle(_) => "idle",
            SpliceEnd::Cancelled => "cancelled",
            SpliceEnd::Failed { .. } => "failed",
            SpliceEnd::Refused { .. } => "refused",
            SpliceEnd::Protocol(_) => "protocol",
            SpliceEnd::Dropped { .. } => "dropped",
        }
    }
}

/// What a splice did.
#[derive(Debug)]
pub struct Spliced {
    pub end: SpliceEnd,
    /// Bytes written to the device side (early bytes included).
    pub to_device: u64,
    /// Bytes written to the client side.
    pub to_client: u64,
}

/// One side's connection, owned by the splice until it ends.
#[derive(Debug)]
pub enum Peer {
    Tcp(TcpStream),
    Quic {
        send: SendStream,
        recv: RecvStream,
        head: Head,
    },
}

/// What a QUIC side's receive half holds before raw bytes.
#[derive(Debug)]
pub enum Head {
    /// Bytes already read past a frame (the rest of the decoder): they go out first.
    Early(Bytes),
    /// `Opened` (or `Refused`) has yet to arrive: the vendor client starts uploading before the
    /// relay's answer, which saves a round trip for protocols whose client speaks first.
    AwaitOpened,
}

impl Peer {
    /// A QUIC stream pair whose `Open`/`Dial` handshake is done; `early` is what the frame
    /// decoder held past the last frame.
    pub fn quic(send: SendStream, recv: RecvStream, early: Vec<u8>) -> Self {
        Peer::Quic {
            send,
            recv,
            head: Head::Early(Bytes::from(early)),
        }
    }

    /// A QUIC stream pair that has sent `Open` and not yet read the answer.
    pub fn quic_awaiting_opened(send: SendStream, recv: RecvStream) -> Self {
        Peer::Quic {
            send,
            recv,
            head: Head::AwaitOpened,
        }
    }

    fn halves(&mut self, chunk: usize) -> (Reader<'_>, Writer<'_>) {
        match self {
            Peer::Tcp(tcp) => {
                let (rd, wr) = tcp.split();
                (
                    Reader::Tcp {
                        rd,
                        buf: BytesMut::new(),
                        chunk,
                    },
                    Writer::Tcp(wr),
                )
            }
            Peer::Quic { send, recv, head } => {
                let head = std::mem::replace(head, Head::Early(Bytes::new()));
                (
                    Reader::Quic { recv, head, chunk },
                    Writer::Quic { send, sent: 0 },
                )
            }
        }
    }

    /// Ends this side at once: an RST for TCP, RESET_STREAM and STOP_SENDING for QUIC.
    pub fn cut(self) {
        match self {
            Peer::Tcp(tcp) => {
                // Linger 0 makes close() discard unsent data and send an RST without blocking.
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                drop(tcp);
            }
            Peer::Quic {
                mut send, mut recv, ..
            } => {
                let _ = send.reset(CUT);
                let _ = recv.stop(CUT);
            }
        }
    }
}

/// What an [`Inspector`] says of a chunk.
#[derive(Debug)]
pub enum Verdict {
    /// Forward the chunk.
    Pass,
    /// Do not forward the chunk; send these bytes back to the side it came from instead. They
    /// go out between the chunks the other direction is carrying.
    Answer(Bytes),
    /// Forward `forward` instead of the chunk (some of it, or bytes held from earlier chunks)
    /// and send `answer` back; either may be empty. A filter that passes some requests of a
    /// chunk and answers others itself says this.
    Split { forward: Bytes, answer: Bytes },
    /// End the connection ([`SpliceEnd::Dropped`]).
    Drop(String),
}

/// A hook on one direction of a splice: sees every chunk before it is forwarded.
pub trait Inspector: Send {
    fn inspect(&mut self, chunk: &Bytes) -> Verdict;
}

/// Where byte counts go as bytes move (the relay's session and metrics totals).
pub trait Meter: Sync {
    fn moved(&self, to: Side, n: usize);
}

impl Meter for () {
    fn moved(&self, _: Side, _: usize) {}
}

/// One spliced connection, set up and then [`run`](Splice::run).
pub struct Splice<'m, M: Meter = ()> {
    client: Peer,
    device: Peer,
    idle: Option<Duration>,
    chunk: usize,
    meter: &'m M,
    to_device: Option<Box<dyn Inspector>>,
    to_client: Option<Box<dyn Inspector>>,
}

impl<M: Meter> std::fmt::Debug for Splice<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splice")
            .field("client", &self.client)
            .field("device", &self.device)
            .field("idle", &self.idle)
            .field("chunk", &self.chunk)
            .field("inspects_to_device", &self.to_device.is_some())
            .field("inspects_to_client", &self.to_client.is_some())
            .finish_non_exhaustive()
    }
}

impl Splice<'static, ()> {
    pub fn new(client: Peer, device: Peer) -> Self {
        Splice {
            client,
            device,
            idle: None,
            chunk: CHUNK,
            meter: &(),
            to_device: None,
            to_client: None,
        }
    }
}

impl<'m, M: Meter> Splice<'m, M> {
    /// Ends the splice when no byte has moved either way for `idle`.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// Reads at most `bytes` at once from either side.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk = bytes.max(1);
        self
    }

    /// Counts bytes into `meter` as they are written.
    pub fn meter<N: Meter>(self, meter: &N) -> Splice<'_, N> {
        Splice {
            client: self.client,
            device: self.device,
            idle: self.idle,
            chunk: self.chunk,
            meter,
            to_device: self.to_device,
            to_client: self.to_client,
        }
    }

    /// Inspects the bytes the client side sends towards the device.
    pub fn inspect_to_device(mut self, i: Box<dyn Inspector>) -> Self {
        self.to_device = Some(i);
        self
    }

    /// Inspects the bytes the device side sends towards the client.
    pub fn inspect_to_client(mut self, i: Box<dyn Inspector>) -> Self {
        self.to_client = Some(i);
        self
    }

    /// Carries bytes until both directions are finished, a side fails, the idle timeout passes
    /// or `until` completes. Every end but [`SpliceEnd::Closed`] cuts the device side first,
    /// then the client side ([`Peer::cut`]).
    pub async fn run(self, until: impl Future<Output = ()>) -> Spliced {
        let Splice {
            mut client,
            mut device,
            idle,
            chunk,
            meter,
            to_device,
            to_client,
        } = self;
        let activity = Activity::new();
        let moved = Moved::default();
        let answer_pending = AtomicBool::new(matches!(
            device,
            Peer::Quic {
                head: Head::AwaitOpened,
                ..
            }
        ));
        let end = {
            let (client_rd, client_wr) = client.halves(chunk);
            let (device_rd, device_wr) = device.halves(chunk);
            // An inspector's answers travel to the writer of the side its bytes came from.
            let (to_client_answers, client_answers) = answer_channel(to_device.is_some());
            let (to_device_answers, device_answers) = answer_channel(to_client.is_some());
            let up = Direction {
                from: Side::Client,
                reader: client_rd,
                writer: device_wr,
                inspector: to_device,
                answer_back: to_client_answers,
                answers_in: device_answers,
                answer_pending: &answer_pending,
            };
            let down = Direction {
                from: Side::Device,
                reader: device_rd,
                writer: client_wr,
                inspector: to_client,
                answer_back: to_device_answers,
                answers_in: client_answers,
                answer_pending: &answer_pending,
            };
            let carry = both(
                up.run(meter, &activity, &moved),
                down.run(meter, &activity, &moved),
            );
            let idle_end = async {
                match idle {
                    Some(d) => {
                        activity.idle_for(d).await;
                        SpliceEnd::Idle(d)
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                end = carry => end,
                end = idle_end => end,
                () = until => SpliceEnd::Cancelled,
            }
        };
        if !end.is_clean() {
            device.cut();
            client.cut();
        }
        Spliced {
            end,
            to_device: moved.to_device.load(Ordering::Relaxed),
            to_client: moved.to_client.load(Ordering::Relaxed),
        }
    }
}

fn answer_channel(inspected: bool) -> (Option<mpsc::Sender<Bytes>>, Option<mpsc::Receiver<Bytes>>) {
    if inspected {
        let (tx, rx) = mpsc::channel(1);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    }
}

/// How one direction ended when it did not fail.
#[derive(Debug)]
enum Flow {
    /// The reader's side closed its half and the writer's side was told (FIN).
    Finished,
    /// The writer's side asked for no more bytes (QUIC STOP_SENDING) while its answer to
    /// `Open` is still to be read: a relay that refuses a stream stops reading it, and the
    /// other direction is about to read why. Alone, this is a reset by that side.
    Stopped(Side),
}

/// Runs both directions. A direction's failure ends the splice at once; a direction that
/// finishes (or was stopped) waits for the other.
async fn both(
    up: impl Future<Output = Result<Flow, SpliceEnd>>,
    down: impl Future<Output = Result<Flow, SpliceEnd>>,
) -> SpliceEnd {
    tokio::pin!(up, down);
    let mut up_flow = None;
    let mut down_flow = None;
    let mut first = None;
    loop {
        let side = tokio::select! {
            r = &mut up, if up_flow.is_none() => match r {
                Ok(flow) => { up_flow = Some(flow); Side::Client }
                Err(end) => return end,
            },
            r = &mut down, if down_flow.is_none() => match r {
                Ok(flow) => { down_flow = Some(flow); Side::Device }
                Err(end) => return end,
            },
        };
        let first = *first.get_or_insert(side);
        match (&up_flow, &down_flow) {
            (Some(Flow::Finished), Some(Flow::Finished)) => return SpliceEnd::Closed { first },
            (Some(Flow::Stopped(by)), Some(_)) | (Some(_), Some(Flow::Stopped(by))) => {
                return SpliceEnd::Reset(*by);
            }
            _ => {}
        }
    }
}

/// Sends an inspector's answer back to the side its chunk came from.
async fn send_back(back: Option<&mpsc::Sender<Bytes>>, answer: Bytes, activity: &Activity) {
    activity.touch();
    if let Some(back) = back {
        // The other direction has finished writing: the answer has nowhere to go, as a reply
        // to a closed connection would not.
        let _ = back.send(answer).await;
    }
}

/// One direction: bytes read from `from`'s side, written to the other.
struct Direction<'a> {
    from: Side,
    reader: Reader<'a>,
    writer: Writer<'a>,
    inspector: Option<Box<dyn Inspector>>,
    /// Answers of this direction's inspector, for the other direction's writer.
    answer_back: Option<mpsc::Sender<Bytes>>,
    /// Answers of the other direction's inspector, for this direction's writer.
    answers_in: Option<mpsc::Receiver<Bytes>>,
    /// True until the device side's answer to `Open` has been read ([`Head::AwaitOpened`]).
    answer_pending: &'a AtomicBool,
}

impl Direction<'_> {
    async fn run(
        mut self,
        meter: &impl Meter,
        activity: &Activity,
        moved: &Moved,
    ) -> Result<Flow, SpliceEnd> {
        let to = self.from.other();
        loop {
            let mut chunk = match self.next_input().await? {
                Input::Chunk(c) => c,
                Input::Answer(a) => {
                    // An answer goes back to the side this direction writes to.
                    if let Some(flow) = self.write(to, a, meter, activity, moved).await? {
                        return Ok(flow);
                    }
                    continue;
                }
                Input::End => break,
            };
            if let Some(inspector) = &mut self.inspector {
                match inspector.inspect(&chunk) {
                    Verdict::Pass => {}
                    Verdict::Drop(reason) => {
                        return Err(SpliceEnd::Dropped {
                            from: self.from,
                            reason,
                        });
                    }
                    Verdict::Answer(answer) => {
                        send_back(self.answer_back.as_ref(), answer, activity).await;
                        continue;
                    }
                    Verdict::Split { forward, answer } => {
                        if !answer.is_empty() {
                            send_back(self.answer_back.as_ref(), answer, activity).await;
                        }
                        if forward.is_empty() {
                            continue;
                        }
                        chunk = forward;
                    }
                }
            }
            if let Some(flow) = self.write(to, chunk, meter, activity, moved).await? {
                return Ok(flow);
            }
        }
        self.writer.finish().await.map_err(|f| f.end(to))?;
        Ok(Flow::Finished)
    }

    /// The next chunk from the reader, or an answer for the writer; answers first.
    async fn next_input(&mut self) -> Result<Input, SpliceEnd> {
        let (from, pending) = (self.from, self.answer_pending);
        // Reads of raw bytes are cancel-safe (quinn's `read_chunk`, a TCP `try_read`); the
        // wait for `Opened` is not, and is never raced against answers.
        let Some(answers) = self
            .answers_in
            .as_mut()
            .filter(|_| !self.reader.awaits_opened())
        else {
            return read_input(&mut self.reader, from, pending).await;
        };
        tokio::select! {
            biased;
            a = answers.recv() => match a {
                Some(a) => Ok(Input::Answer(a)),
                None => {
                    // The other direction ended: no more answers.
                    self.answers_in = None;
                    read_input(&mut self.reader, from, pending).await
                }
            },
            r = read_input(&mut self.reader, from, pending) => r,
        }
    }

    /// Writes one chunk; `Some` when the writer's side stopped reading.
    async fn write(
        &mut self,
        to: Side,
        chunk: Bytes,
        meter: &impl Meter,
        activity: &Activity,
        moved: &Moved,
    ) -> Result<Option<Flow>, SpliceEnd> {
        let n = chunk.len();
        match self.writer.write(chunk).await {
            Ok(()) => {
                moved.add(to, n);
                meter.moved(to, n);
                activity.touch();
                Ok(None)
            }
            // STOP_SENDING is the QUIC form of a peer that closed its socket: a reset, unless
            // its answer to `Open` (a refusal, most likely) is still to be read.
            Err(Fault::Stopped) if self.answer_pending.load(Ordering::Relaxed) => {
                Ok(Some(Flow::Stopped(to)))
            }
            Err(f) => Err(f.end(to)),
        }
    }
}

async fn read_input(
    reader: &mut Reader<'_>,
    from: Side,
    answer_pending: &AtomicBool,
) -> Result<Input, SpliceEnd> {
    match reader.read(answer_pending).await {
        Ok(Some(c)) => Ok(Input::Chunk(c)),
        Ok(None) => Ok(Input::End),
        Err(f) => Err(f.end(from)),
    }
}

enum Input {
    Chunk(Bytes),
    Answer(Bytes),
    End,
}

/// Why a read or write failed, before it is tied to a side.
#[derive(Debug)]
enum Fault {
    Reset,
    /// QUIC STOP_SENDING: the peer reads no more.
    Stopped,
    Io(io::Error),
    Refused {
        code: RefusalCode,
        message: String,
    },
    Protocol(String),
}

impl Fault {
    fn end(self, side: Side) -> SpliceEnd {
        match self {
            Fault::Reset | Fault::Stopped => SpliceEnd::Reset(side),
            Fault::Io(error) => SpliceEnd::Failed { side, error },
            Fault::Refused { code, message } => SpliceEnd::Refused { code, message },
            Fault::Protocol(what) => SpliceEnd::Protocol(what),
        }
    }

    fn tcp(e: io::Error) -> Self {
        use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        match e.kind() {
            ConnectionReset | ConnectionAborted | BrokenPipe => Fault::Reset,
            _ => Fault::Io(e),
        }
    }
}

impl From<quinn::ReadError> for Fault {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(_) => Fault::Reset,
            // The connection's error names the cause ("closed by peer: ..."), not just "lost".
            quinn::ReadError::ConnectionLost(cause) => Fault::Io(io::Error::other(cause)),
            other => Fault::Io(io::Error::other(other)),
        }
    }
}

impl From<quinn::WriteError> for Fault {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(_) => Fault::Stopped,
            quinn::WriteError::ConnectionLost(cause) => Fault::Io(io::Error::other(cause)),
            other => Fault::Io(io::Error::other(other)),
        }
    }
}

enum Reader<'a> {
    Tcp {
        rd: ReadHalf<'a>,
        buf: BytesMut,
        chunk: usize,
    },
    Quic {
        recv: &'a mut RecvStream,
        head: Head,
        chunk: usize,
    },
}

impl Reader<'_> {
    fn awaits_opened(&self) -> bool {
        matches!(
            self,
            Reader::Quic {
                head: Head::AwaitOpened,
                ..
            }
        )
    }

    async fn read(&mut self, answer_pending: &AtomicBool) -> Result<Option<Bytes>, Fault> {
        match self {
            Reader::Tcp { rd, buf, chunk } => {
                read_tcp_chunk(rd, buf, *chunk).await.map_err(Fault::tcp)
            }
            Reader::Quic { recv, head, chunk } => {
                match std::mem::replace(head, Head::Early(Bytes::new())) {
                    Head::Early(early) if !early.is_empty() => return Ok(Some(early)),
                    Head::Early(_) => {}
                    Head::AwaitOpened => {
                        let answer = await_opened(recv).await;
                        answer_pending.store(false, Ordering::Relaxed);
                        let early = answer?;
                        if !early.is_empty() {
                            return Ok(Some(early));
                        }
                    }
                }
                Ok(recv.read_chunk(*chunk, true).await?.map(|c| c.bytes))
            }
        }
    }
}

/// Reads the answer to `Open`: the bytes past `Opened`, or why there are none.
async fn await_opened(recv: &mut RecvStream) -> Result<Bytes, Fault> {
    let mut dec = FrameDecoder::new();
    match read_frame(recv, &mut dec).await {
        Ok(Some(Frame::Opened)) => Ok(Bytes::from(dec.into_remainder())),
        Ok(Some(Frame::Refused { code, message })) => Err(Fault::Refused { code, message }),
        Ok(Some(other)) => Err(Fault::Protocol(format!(
            "{} instead of Opened",
            other.name()
        ))),
        Ok(None) | Err(FrameError::Truncated | FrameError::Finished) => {
            Err(Fault::Protocol("the stream ended before Opened".into()))
        }
        Err(FrameError::Read(e)) => Err(e.into()),
        Err(FrameError::Write(e)) => Err(e.into()),
        Err(FrameError::Wire(e)) => Err(Fault::Protocol(e.to_string())),
    }
}

/// Bytes a tunnelled connection sends one way before its QUIC stream counts as bulk.
///
/// A poll, a keystroke or a screen update is well under this; a firmware upload or a file copy
/// passes it within its first round trips. From then on the stream sends at [`BULK_PRIORITY`],
/// below every stream still under the mark, so quinn packs interactive bytes into the next
/// packet ahead of bulk bytes already waiting in its send buffer (issue 16, point 2). Streams of
/// one priority share the connection round robin, so bulk streams still share fairly.
pub const BULK_AFTER: u64 = 1024 * 1024;
/// Priority of a bulk stream; quinn's default (and every other stream's) is 0.
pub const BULK_PRIORITY: i32 = -1;

enum Writer<'a> {
    Tcp(WriteHalf<'a>),
    Quic {
        send: &'a mut SendStream,
        /// Bytes written so far, for [`BULK_AFTER`].
        sent: u64,
    },
}

impl Writer<'_> {
    async fn write(&mut self, chunk: Bytes) -> Result<(), Fault> {
        match self {
            Writer::Tcp(wr) => wr.write_all(&chunk).await.map_err(Fault::tcp),
            Writer::Quic { send, sent } => {
                let before = *sent;
                *sent += chunk.len() as u64;
                if before < BULK_AFTER && *sent >= BULK_AFTER {
                    // Only fails on a stream already reset, which the write reports.
                    let _ = send.set_priority(BULK_PRIORITY);
                }
                Ok(send.write_chunk(chunk).await?)
            }
        }
    }

    /// Passes the end of the reader's half on: TCP shutdown(write), or QUIC FIN.
    async fn finish(&mut self) -> Result<(), Fault> {
        match self {
            Writer::Tcp(wr) => wr.shutdown().await.map_err(Fault::tcp),
            Writer::Quic { send, .. } => match send.finish() {
                Ok(()) => Ok(()),
                // Already reset by the peer's STOP_SENDING: nothing is left to finish.
                Err(quinn::ClosedStream { .. }) => Ok(()),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Moved {
    to_device: AtomicU64,
    to_client: AtomicU64,
}

impl Moved {
    fn add(&self, to: Side, n: usize) {
        let total = match to {
            Side::Device => &self.to_device,
            Side::Client => &self.to_client,
        };
        total.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// When a splice last moved a byte, either way (monotonic, tokio's clock).
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            sleep_until(self.last() + idle).await;
            if self.last() + idle <= Instant::now() {
                return;
            }
        }
    }
}
