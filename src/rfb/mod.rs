//! The client-to-server half of RFB 3.8 (RFC 6143), parsed by hand to enforce view-only viewers.
//!
//! Past the handshake the relay never interprets the server's stream (the handshake itself it
//! may do on the viewer's behalf: [`greeting`]); it only needs to know where each message
//! the *viewer* sends begins and ends, so it can drop input events (keys, pointer, clipboard)
//! from a view-only viewer and refuse anything it does not understand. Parsing is two-phase
//! like mini-redis: [`RfbParser::next_message`] first checks that a whole message is buffered
//! (returning `Ok(None)` if not), then decodes it; [`RfbFilter`] feeds it arbitrary chunks.
//! The one exception is ClientCutText: once its header is in, its payload (up to a megabyte
//! of clipboard) streams through or is skipped as it arrives rather than being held whole.
//!
//! Handshake handled (client side only): ProtocolVersion (3.7 or 3.8; 3.3 lets the server pick
//! the security type, which we could only learn by parsing the server stream, so it is
//! refused), the security type byte (None and VNC authentication; every other type is
//! refused), the VNC authentication response, ClientInit. Normal messages: the RFC 6143 core
//! set plus what noVNC 1.3 sends (`core/rfb.js`, `RFB.messages`): EnableContinuousUpdates
//! (150), Fence (248), xvp (250), SetDesktopSize (251), QEMU extended key event (255/0), and
//! the extended clipboard (ClientCutText with a negative length).

use thiserror::Error;

pub mod greeting;

/// What a viewer may do with the desktop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Keyboard, pointer and clipboard reach the desktop (the user taking over).
    Control,
    /// Pixels only: every input message is dropped before it reaches the VNC server.
    ViewOnly,
}

/// Errors of the client-to-server RFB stream. Every one of them closes the connection.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RfbError {
    #[error("malformed RFB ProtocolVersion")]
    BadVersion,
    #[error("unsupported RFB protocol version 3.{minor}")]
    UnsupportedVersion { minor: u16 },
    #[error("unsupported RFB security type {0}")]
    UnsupportedSecurity(u8),
    #[error("unknown RFB client message type {0}")]
    UnknownMessage(u8),
    #[error("unknown QEMU client submessage {0}")]
    UnknownQemuMessage(u8),
    #[error("ClientCutText of {len} bytes exceeds the limit of {limit}")]
    CutTextTooLong { len: u32, limit: u32 },
    #[error("SetEncodings with {count} encodings exceeds the limit of {limit}")]
    TooManyEncodings { count: u16, limit: u16 },
    #[error("Fence payload of {0} bytes exceeds the RFB maximum of 64")]
    FenceTooLong(u8),
    #[error("the RFB stream already failed")]
    Failed,
}

/// Limits on client messages whose size the client chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfbLimits {
    /// Largest ClientCutText payload (plain or extended), in bytes.
    pub max_cut_text: u32,
    /// Largest number of encodings in one SetEncodings (noVNC sends about 30).
    pub max_encodings: u16,
}

impl Default for RfbLimits {
    fn default() -> Self {
        Self {
            max_cut_text: 1 << 20,
            max_encodings: 512,
        }
    }
}

impl RfbLimits {
    /// The longest message a filter ever holds back whole: every type but ClientCutText,
    /// whose payload is passed on or skipped as it arrives. The largest are SetEncodings at
    /// its limit and SetDesktopSize with 255 screens.
    pub fn max_buffered_len(&self) -> usize {
        (4 + 4 * self.max_encodings as usize).max(8 + 16 * 255)
    }
}

/// Where the client stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    ProtocolVersion,
    SecurityType,
    VncAuthResponse,
    ClientInit,
    Normal,
}

/// One complete client message. Payloads are not copied: the caller has the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    ProtocolVersion {
        minor: u16,
    },
    SecurityType(u8),
    /// The 16-byte DES response; deliberately carries no data so it cannot be logged.
    VncAuthResponse,
    ClientInit {
        shared: bool,
    },
    SetPixelFormat,
    SetEncodings {
        count: u16,
    },
    FramebufferUpdateRequest {
        incremental: bool,
        x: u16,
        y: u16,
        width: u16,
        height: u16,
    },
    KeyEvent {
        down: bool,
        keysym: u32,
    },
    PointerEvent {
        buttons: u8,
        x: u16,
        y: u16,
    },
    /// `extended` is the extended-clipboard form (negative length on the wire).
    ClientCutText {
        len: u32,
        extended: bool,
    },
    EnableContinuousUpdates {
        enable: bool,
    },
    Fence {
        flags: u32,
        len: u8,
    },
    Xvp {
        version: u8,
        op: u8,
    },
    SetDesktopSize {
        screens: u8,
    },
    QemuKeyEvent {
        down: bool,
        keysym: u32,
        keycode: u32,
    },
}

impl Message {
    /// ProtocolVersion, the security type and its response, ClientInit.
    pub fn is_handshake(&self) -> bool {
        matches!(
            self,
            Message::ProtocolVersion { .. }
                | Message::SecurityType(_)
                | Message::VncAuthResponse
                | Message::ClientInit { .. }
        )
    }

    /// Whether a viewer with `access` may send this message to the VNC server.
    ///
    /// View-only drops every input (keys, pointer, clipboard) and SetDesktopSize: a viewer
    /// must not resize the desktop the agent and the user are working on. xvp (power off,
    /// reboot, reset) is dropped for everyone: taking over a login never needs it.
    pub fn allowed(&self, access: Access) -> bool {
        match self {
            Message::Xvp { .. } => false,
            Message::KeyEvent { .. }
            | Message::PointerEvent { .. }
            | Message::ClientCutText { .. }
            | Message::QemuKeyEvent { .. }
            | Message::SetDesktopSize { .. } => access == Access::Control,
            _ => true,
        }
    }
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Phase 1 of a normal message: how long it is, or `None` if its length is not known yet.
/// Size limits are checked here, from the header alone, so nothing over a limit is buffered.
fn normal_len(buf: &[u8], limits: &RfbLimits) -> Result<Option<usize>, RfbError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let need = |n: usize| {
        if buf.len() >= n {
            Ok(Some(()))
        } else {
            Ok(None)
        }
    };
    let len = match kind {
        0 => 20,
        2 => {
            if need(4)?.is_none() {
                return Ok(None);
            }
            let count = u16_at(buf, 2);
            if count > limits.max_encodings {
                return Err(RfbError::TooManyEncodings {
                    count,
                    limit: limits.max_encodings,
                });
            }
            4 + 4 * count as usize
        }
        3 => 10,
        4 => 8,
        5 => 6,
        6 => {
            if need(8)?.is_none() {
                return Ok(None);
            }
            let len = cut_text_len(u32_at(buf, 4));
            if len > limits.max_cut_text {
                return Err(RfbError::CutTextTooLong {
                    len,
                    limit: limits.max_cut_text,
                });
            }
            8 + len as usize
        }
        150 => 10,
        248 => {
            if need(9)?.is_none() {
                return Ok(None);
            }
            if buf[8] > 64 {
                return Err(RfbError::FenceTooLong(buf[8]));
            }
            9 + buf[8] as usize
        }
        250 => 4,
        251 => {
            if need(7)?.is_none() {
                return Ok(None);
            }
            8 + 16 * buf[6] as usize
        }
        255 => {
            if need(2)?.is_none() {
                return Ok(None);
            }
            if buf[1] != 0 {
                return Err(RfbError::UnknownQemuMessage(buf[1]));
            }
            12
        }
        other => return Err(RfbError::UnknownMessage(other)),
    };
    Ok((buf.len() >= len).then_some(len))
}

/// The payload length of ClientCutText: a negative length is the extended clipboard.
fn cut_text_len(raw: u32) -> u32 {
    (raw as i32).unsigned_abs()
}

/// Phase 2 of a normal message: decode; `buf` holds at least the whole message.
fn decode_normal(buf: &[u8]) -> Message {
    match buf[0] {
        0 => Message::SetPixelFormat,
        2 => Message::SetEncodings {
            count: u16_at(buf, 2),
        },
        3 => Message::FramebufferUpdateRequest {
            incremental: buf[1] != 0,
            x: u16_at(buf, 2),
            y: u16_at(buf, 4),
            width: u16_at(buf, 6),
            height: u16_at(buf, 8),
        },
        4 => Message::KeyEvent {
            down: buf[1] != 0,
            keysym: u32_at(buf, 4),
        },
        5 => Message::PointerEvent {
            buttons: buf[1],
            x: u16_at(buf, 2),
            y: u16_at(buf, 4),
        },
        6 => {
            let raw = u32_at(buf, 4);
            Message::ClientCutText {
                len: cut_text_len(raw),
                extended: (raw as i32) < 0,
            }
        }
        150 => Message::EnableContinuousUpdates {
            enable: buf[1] != 0,
        },
        248 => Message::Fence {
            flags: u32_at(buf, 4),
            len: buf[8],
        },
        250 => Message::Xvp {
            version: buf[2],
            op: buf[3],
        },
        251 => Message::SetDesktopSize { screens: buf[6] },
        // normal_len admitted only sub-message 0 of 255.
        _ => Message::QemuKeyEvent {
            down: u16_at(buf, 2) != 0,
            keysym: u32_at(buf, 4),
            keycode: u32_at(buf, 8),
        },
    }
}

/// The client-to-server stream's parser: phase plus limits.
#[derive(Debug, Clone)]
pub struct RfbParser {
    phase: Phase,
    limits: RfbLimits,
}

impl RfbParser {
    pub fn new(limits: RfbLimits) -> Self {
        Self {
            phase: Phase::ProtocolVersion,
            limits,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The total length of a ClientCutText at the start of `buf` whose 8-byte header is
    /// there but not its whole payload (its length already checked against the limit by
    /// [`RfbParser::next_message`], which returned `Ok(None)` for it).
    pub fn partial_cut_text(&self, buf: &[u8]) -> Option<usize> {
        if self.phase != Phase::Normal || buf.len() < 8 || buf[0] != 6 {
            return None;
        }
        let total = 8 + cut_text_len(u32_at(buf, 4)) as usize;
        (buf.len() < total).then_some(total)
    }

    /// Returns the next whole message at the start of `buf` and its length in bytes, or
    /// `Ok(None)` if more bytes are needed. Advances the handshake phase on success.
    pub fn next_message(&mut self, buf: &[u8]) -> Result<Option<(Message, usize)>, RfbError> {
        match self.phase {
            Phase::ProtocolVersion => {
                if buf.len() < 12 {
                    return Ok(None);
                }
                let minor = parse_version(&buf[..12])?;
                self.phase = Phase::SecurityType;
                Ok(Some((Message::ProtocolVersion { minor }, 12)))
            }
            Phase::SecurityType => {
                let Some(&kind) = buf.first() else {
                    return Ok(None);
                };
                self.phase = match kind {
                    1 => Phase::ClientInit,
                    2 => Phase::VncAuthResponse,
                    other => return Err(RfbError::UnsupportedSecurity(other)),
                };
                Ok(Some((Message::SecurityType(kind), 1)))
            }
            Phase::VncAuthResponse => {
                if buf.len() < 16 {
                    return Ok(None);
                }
                self.phase = Phase::ClientInit;
                Ok(Some((Message::VncAuthResponse, 16)))
            }
            Phase::ClientInit => {
                let Some(&shared) = buf.first() else {
                    return Ok(None);
                };
                self.phase = Phase::Normal;
                Ok(Some((
                    Message::ClientInit {
                        shared: shared != 0,
                    },
                    1,
                )))
            }
            Phase::Normal => match normal_len(buf, &self.limits)? {
                Some(len) => Ok(Some((decode_normal(&buf[..len]), len))),
                None => Ok(None),
            },
        }
    }
}

/// `RFB 003.00x\n` with x = 7 or 8. noVNC answers 3.8 to x11vnc and Xvnc.
fn parse_version(v: &[u8]) -> Result<u16, RfbError> {
    let digits = |r: &[u8]| -> Option<u16> {
        r.iter().try_fold(0u16, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u16::from(d - b'0'))
        })
    };
    if &v[..4] != b"RFB " || v[7] != b'.' || v[11] != b'\n' {
        return Err(RfbError::BadVersion);
    }
    let (Some(major), Some(minor)) = (digits(&v[4..7]), digits(&v[8..11])) else {
        return Err(RfbError::BadVersion);
    };
    if major != 3 || !(minor == 7 || minor == 8) {
        return Err(RfbError::UnsupportedVersion { minor });
    }
    Ok(minor)
}

/// Counters of one filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterStats {
    pub messages: u64,
    pub dropped: u64,
    pub bytes_out: u64,
}

/// Passes a viewer's allowed messages through and drops the rest, across any chunking.
///
/// ClientInit's shared flag is always forced to 1: no viewer may make the VNC server
/// disconnect the others (x11vnc and Xvnc honour a non-shared ClientInit).
#[derive(Debug)]
pub struct RfbFilter {
    access: Access,
    parser: RfbParser,
    /// An incomplete message carried over between `feed` calls; never longer than
    /// `limits.max_buffered_len()` because lengths are checked from the header.
    pending: Vec<u8>,
    /// Payload bytes still to come of a ClientCutText whose header was seen, and whether
    /// they are forwarded. A clipboard of up to `max_cut_text` streams through; buffering it
    /// whole would let every viewer pin a megabyte (one that is then dropped, for view-only).
    cut_text_rest: usize,
    forward_cut_text: bool,
    failed: bool,
    stats: FilterStats,
    /// The relay already did the handshake with the server ([`greeting`]): the viewer's
    /// handshake answers are checked against what it was sent and dropped.
    answered: bool,
}

impl RfbFilter {
    pub fn new(access: Access) -> Self {
        Self::with_limits(access, RfbLimits::default())
    }

    pub fn with_limits(access: Access, limits: RfbLimits) -> Self {
        Self {
            access,
            parser: RfbParser::new(limits),
            pending: Vec::new(),
            cut_text_rest: 0,
            forward_cut_text: false,
            failed: false,
            stats: FilterStats::default(),
            answered: false,
        }
    }

    /// A filter for a viewer the relay greeted on the server's behalf ([`greeting`]): its
    /// ProtocolVersion must be 3.8 and its security type None, as offered; those and its
    /// ClientInit are dropped (the server already had the relay's), and only what follows
    /// is forwarded, as [`RfbFilter::with_limits`] would.
    pub fn answered(access: Access, limits: RfbLimits) -> Self {
        Self {
            answered: true,
            ..Self::with_limits(access, limits)
        }
    }

    pub fn access(&self) -> Access {
        self.access
    }

    pub fn phase(&self) -> Phase {
        self.parser.phase()
    }

    pub fn stats(&self) -> FilterStats {
        self.stats
    }

    /// Bytes held back waiting for the rest of a message.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Appends to `out` the bytes of every allowed whole message in `pending ++ input`.
    /// On error `out` may already hold the allowed messages before the bad one; the caller
    /// closes the connection, and every later `feed` returns [`RfbError::Failed`].
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RfbError> {
        if self.failed {
            return Err(RfbError::Failed);
        }
        let input = self.stream_cut_text(input, out);
        if input.is_empty() {
            return Ok(());
        }
        let result = if self.pending.is_empty() {
            // Fast path: the usual WebSocket message holds whole RFB messages.
            match self.drain(input, out) {
                Ok(used) => {
                    self.pending.extend_from_slice(&input[used..]);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(input);
            let result = self.drain(&pending, out).map(|used| {
                pending.drain(..used);
            });
            self.pending = pending;
            result
        };
        if result.is_err() {
            self.failed = true;
            self.pending = Vec::new();
        } else if self.pending.capacity() > PENDING_KEEP_CAPACITY {
            // The slow path joined a whole frame onto a partial message; give that back.
            self.pending
                .shrink_to(PENDING_KEEP_CAPACITY.max(self.pending.len()));
        }
        result
    }

    /// Passes on or skips the part of `input` that belongs to a ClientCutText payload in
    /// flight; returns the rest.
    fn stream_cut_text<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
        let n = self.cut_text_rest.min(input.len());
        if n == 0 {
            return input;
        }
        if self.forward_cut_text {
            out.extend_from_slice(&input[..n]);
            self.stats.bytes_out += n as u64;
        }
        self.cut_text_rest -= n;
        &input[n..]
    }

    /// Forwards or drops every whole message at the start of `buf`; returns bytes consumed.
    fn drain(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<usize, RfbError> {
        let mut at = 0;
        while let Some((msg, len)) = self.parser.next_message(&buf[at..])? {
            self.stats.messages += 1;
            let bytes = &buf[at..at + len];
            if self.answered && msg.is_handshake() {
                match msg {
                    Message::ProtocolVersion { minor } if minor != 8 => {
                        return Err(RfbError::UnsupportedVersion { minor })
                    }
                    Message::SecurityType(kind) if kind != greeting::SECURITY_NONE => {
                        return Err(RfbError::UnsupportedSecurity(kind))
                    }
                    _ => {}
                }
            } else if let Message::ClientInit { .. } = msg {
                out.push(1);
                self.stats.bytes_out += 1;
            } else if msg.allowed(self.access) {
                out.extend_from_slice(bytes);
                self.stats.bytes_out += len as u64;
            } else {
                self.stats.dropped += 1;
            }
            at += len;
        }
        // A ClientCutText whose header is here but not all of its payload: from now on it
        // streams (`stream_cut_text`) instead of waiting in `pending`.
        if let Some(total) = self.parser.partial_cut_text(&buf[at..]) {
            let msg = decode_normal(&buf[at..at + 8]);
            self.stats.messages += 1;
            self.forward_cut_text = msg.allowed(self.access);
            let here = buf.len() - at;
            if self.forward_cut_text {
                out.extend_from_slice(&buf[at..]);
                self.stats.bytes_out += here as u64;
            } else {
                self.stats.dropped += 1;
            }
            self.cut_text_rest = total - here;
            at = buf.len();
        }
        Ok(at)
    }
}

/// `pending` keeps at most this much capacity between frames (more than any message it
/// holds whole: [`RfbLimits::max_buffered_len`]).
const PENDING_KEEP_CAPACITY: usize = 8 * 1024;

/// Encoders for client messages, used by tests, the benchmark and fakes. They produce
/// exactly the bytes noVNC's `RFB.messages` would.
pub mod encode {
    pub fn version() -> Vec<u8> {
        b"RFB 003.008\n".to_vec()
    }
    pub fn key_event(down: bool, keysym: u32) -> Vec<u8> {
        let mut v = vec![4, down as u8, 0, 0];
        v.extend_from_slice(&keysym.to_be_bytes());
        v
    }
    pub fn pointer_event(buttons: u8, x: u16, y: u16) -> Vec<u8> {
        let mut v = vec![5, buttons];
        v.extend_from_slice(&x.to_be_bytes());
        v.extend_from_slice(&y.to_be_bytes());
        v
    }
    pub fn client_cut_text(text: &[u8]) -> Vec<u8> {
        let mut v = vec![6, 0, 0, 0];
        v.extend_from_slice(&(text.len() as u32).to_be_bytes());
        v.extend_from_slice(text);
        v
    }
    pub fn framebuffer_update_request(incremental: bool, w: u16, h: u16) -> Vec<u8> {
        let mut v = vec![3, incremental as u8, 0, 0, 0, 0];
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v
    }
    pub fn set_encodings(encodings: &[i32]) -> Vec<u8> {
        let mut v = vec![2, 0];
        v.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            v.extend_from_slice(&e.to_be_bytes());
        }
        v
    }
}

#[cfg(test)]
mod tests;
