//! hyper answers a few malformed HTTP/1 requests itself, before any request reaches the router:
//! 400 (a bad request line, header or version), 414 (a URI too long) and 431 (a head over the
//! read buffer or over 100 header fields), each with an empty body. hyper has no hook to
//! change them, so the connection rewrites them on their way out into the problem documents
//! every other error is.
//!
//! To tell hyper's answers from the router's, the connection follows the response stream it
//! writes: each response head, then its body by `Content-Length` or chunked framing (hyper's
//! own encoder wrote it, so the framing is well formed), so it always knows where the next head
//! starts. The router's answers are announced: the connection records the method of each
//! request it hands to the router (a `HEAD` answer has a length but no body), and hyper writes
//! answers in request order. A final head with no announced request is hyper's. Body bytes are
//! passed through without a copy; heads and chunk framing go through a small buffer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hyper::{Method, StatusCode};

/// Requests handed to the router whose answers have not been written yet, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Announced(Arc<Mutex<VecDeque<Method>>>);

impl Announced {
    /// The router is about to answer a request with `method`.
    pub(crate) fn push(&self, method: Method) {
        self.lock().push_back(method);
    }

    fn pop(&self) -> Option<Method> {
        self.lock().pop_front()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Method>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A response head larger than this is not hyper's (ours are well under 1 KiB): stop tracking.
const MAX_HEAD: usize = 64 * 1024;

/// What to do with the start of the bytes hyper wrote.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Write the first `n` bytes as they are.
    Pass(usize),
    /// `n` bytes were taken; what they become (possibly nothing yet) is in the output buffer.
    Took(usize),
}

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Length(u64),
    Chunk(Chunk),
    /// Until the connection closes (a body without framing, an upgrade, or lost track).
    Through,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading the hex size (and ignoring any extension) up to its CR.
    Size {
        size: u64,
        ext: bool,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// Trailer lines after the last chunk; `empty` while the current line has no bytes yet.
    Trailer {
        empty: bool,
        cr: bool,
    },
}

/// Follows the HTTP/1 responses written on one connection and rewrites hyper's own.
#[derive(Debug)]
pub(crate) struct ResponseStream {
    state: State,
    announced: Announced,
}

impl ResponseStream {
    pub(crate) fn new(announced: Announced) -> Self {
        Self {
            state: State::Head(Vec::new()),
            announced,
        }
    }

    /// Looks at the start of `input`, appending to `out` whatever taken bytes become.
    pub(crate) fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        if input.is_empty() {
            return Step::Pass(0);
        }
        match &mut self.state {
            State::Through => Step::Pass(input.len()),
            State::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                *left -= n as u64;
                if *left == 0 {
                    self.state = State::Head(Vec::new());
                }
                Step::Pass(n)
            }
            State::Chunk(Chunk::Data(left)) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                *left -= n as u64;
                if *left == 0 {
                    self.state = State::Chunk(Chunk::DataCr);
                }
                Step::Pass(n)
            }
            State::Chunk(_) => {
                let mut taken = 0;
                while taken < input.len() {
                    let State::Chunk(chunk) = &mut self.state else {
                        break;
                    };
                    if matches!(chunk, Chunk::Data(_)) {
                        break;
                    }
                    let byte = input[taken];
                    taken += 1;
                    out.push(byte);
                    match next_chunk_state(*chunk, byte) {
                        Some(Some(next)) => *chunk = next,
                        Some(None) => self.state = State::Head(Vec::new()),
                        None => {
                            tracing::warn!("lost track of a chunked response; not rewriting");
                            self.state = State::Through;
                        }
                    }
                }
                Step::Took(taken)
            }
            State::Head(head) => {
                let before = head.len();
                head.extend_from_slice(input);
                let Some(end) = find_head_end(head, before) else {
                    if head.len() > MAX_HEAD {
                        out.append(head);
                        self.state = State::Through;
                    }
                    return Step::Took(input.len());
                };
                let taken = end - before;
                head.truncate(end);
                let head = std::mem::take(head);
                self.state = self.after_head(&head, out);
                Step::Took(taken)
            }
        }
    }

    /// Emits a complete head (or its replacement) and says what follows it.
    fn after_head(&mut self, head: &[u8], out: &mut Vec<u8>) -> State {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let status = match parsed.parse(head) {
            Ok(httparse::Status::Complete(_)) => parsed.code.unwrap_or(0),
            _ => {
                out.extend_from_slice(head);
                return State::Through;
            }
        };
        if (100..200).contains(&status) {
            out.extend_from_slice(head);
            // 101 switches protocols; any other 1xx is followed by the final answer.
            return if status == 101 {
                State::Through
            } else {
                State::Head(Vec::new())
            };
        }
        let Some(method) = self.announced.pop() else {
            out.extend_from_slice(&problem_response(status));
            return State::Head(Vec::new());
        };
        out.extend_from_slice(head);
        if method == Method::HEAD || status == 204 || status == 304 {
            return State::Head(Vec::new());
        }
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        if header("transfer-encoding").is_some_and(|v| {
            std::str::from_utf8(v).is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
        }) {
            return State::Chunk(Chunk::Size {
                size: 0,
                ext: false,
            });
        }
        match header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(0) => State::Head(Vec::new()),
            Some(n) => State::Length(n),
            None => State::Through,
        }
    }
}

/// The end (exclusive) of the head in `buf`, searching from a little before `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

/// The chunked-framing state after `byte`: `Some(None)` when the body ended, `None` when the
/// bytes are not chunked framing.
fn next_chunk_state(state: Chunk, byte: u8) -> Option<Option<Chunk>> {
    Some(Some(match state {
        Chunk::Size { size, ext: false } => match byte {
            b'\r' => Chunk::SizeLf { size },
            b';' => Chunk::Size { size, ext: true },
            _ => {
                let digit = (byte as char).to_digit(16)?;
                Chunk::Size {
                    size: size.checked_mul(16)?.checked_add(u64::from(digit))?,
                    ext: false,
                }
            }
        },
        Chunk::Size { size, ext: true } => match byte {
            b'\r' => Chunk::SizeLf { size },
            _ => Chunk::Size { size, ext: true },
        },
        Chunk::SizeLf { size } => match (byte, size) {
            (b'\n', 0) => Chunk::Trailer {
                empty: true,
                cr: false,
            },
            (b'\n', n) => Chunk::Data(n),
            _ => return None,
        },
        Chunk::DataCr => match byte {
            b'\r' => Chunk::DataLf,
            _ => return None,
        },
        Chunk::DataLf => match byte {
            b'\n' => Chunk::Size {
                size: 0,
                ext: false,
            },
            _ => return None,
        },
        Chunk::Trailer { empty, cr: false } => match byte {
            b'\r' => Chunk::Trailer { empty, cr: true },
            _ => Chunk::Trailer {
                empty: false,
                cr: false,
            },
        },
        Chunk::Trailer { empty, cr: true } => match (byte, empty) {
            (b'\n', true) => return Some(None),
            (b'\n', false) => Chunk::Trailer {
                empty: true,
                cr: false,
            },
            _ => return None,
        },
        Chunk::Data(_) => return None,
    }))
}

/// The problem document that replaces hyper's bare answer with `status`.
pub(crate) fn problem_response(status: u16) -> Vec<u8> {
    let (slug, title, detail) = match status {
        400 => (
            "malformed-request",
            "Malformed request",
            "the request is not valid HTTP/1.1: check the request line, the header syntax and the version",
        ),
        414 => (
            "uri-too-long",
            "URI too long",
            "the request target is longer than the server reads",
        ),
        431 => (
            "request-header-fields-too-large",
            "Request header fields too large",
            "the request head exceeds 64 KiB or 100 header fields",
        ),
        _ => (
            "malformed-request",
            "Malformed request",
            "the server could not read the request",
        ),
    };
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let problem = cohort_protocol::problem::Problem::new(slug, title, code.as_u16(), detail);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or(""),
        cohort_protocol::problem::CONTENT_TYPE,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
#[path = "h1_problems_tests.rs"]
mod tests;
