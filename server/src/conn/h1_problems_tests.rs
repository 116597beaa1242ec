use proptest::prelude::*;

use super::*;

/// Runs `chunks` (as hyper would write them) through a stream, returning what goes out.
fn rewrite(announced: &[Method], chunks: &[&[u8]]) -> Vec<u8> {
    let a = Announced::default();
    for m in announced {
        a.push(m.clone());
    }
    let mut stream = ResponseStream::new(a);
    let mut wire = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        while !rest.is_empty() {
            let mut out = Vec::new();
            let n = match stream.step(rest, &mut out) {
                Step::Pass(n) => {
                    wire.extend_from_slice(&rest[..n]);
                    n
                }
                Step::Took(n) => n,
            };
            wire.extend_from_slice(&out);
            assert!(n > 0, "no progress on {rest:?}");
            rest = &rest[n..];
        }
    }
    wire
}

const OK_HELLO: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
const HYPER_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
const HYPER_431: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nA;x=1\r\n0123456789\r\n0\r\n\r\n";

fn body_of(wire: &[u8]) -> serde_json::Value {
    let at = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    serde_json::from_slice(&wire[at..]).unwrap()
}

#[test]
fn hyper_own_answer_becomes_a_problem_document() {
    let wire = rewrite(&[], &[HYPER_400]);
    let text = String::from_utf8_lossy(&wire);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("content-type: application/problem+json\r\n"));
    assert!(text.contains("connection: close\r\n"));
    let p = body_of(&wire);
    assert_eq!(p["type"], "urn:cohort:problem:malformed-request");
    assert_eq!(p["status"], 400);
    let wire = rewrite(&[], &[HYPER_431]);
    assert_eq!(
        body_of(&wire)["type"],
        "urn:cohort:problem:request-header-fields-too-large"
    );
}

#[test]
fn the_routers_answers_pass_unchanged_and_the_error_after_them_is_rewritten() {
    let mut stream = OK_HELLO.to_vec();
    stream.extend_from_slice(CHUNKED);
    stream.extend_from_slice(HYPER_400);
    let wire = rewrite(&[Method::GET, Method::POST], &[&stream]);
    let keep = OK_HELLO.len() + CHUNKED.len();
    assert_eq!(&wire[..keep], &stream[..keep]);
    assert_eq!(body_of(&wire[keep..])["status"], 400);
}

#[test]
fn a_head_answer_has_a_length_but_no_body() {
    let head_answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    let mut stream = head_answer.to_vec();
    stream.extend_from_slice(HYPER_431);
    let wire = rewrite(&[Method::HEAD], &[&stream]);
    assert_eq!(&wire[..head_answer.len()], head_answer);
    assert_eq!(body_of(&wire[head_answer.len()..])["status"], 431);
}

#[test]
fn an_interim_continue_does_not_take_the_answer_it_precedes() {
    let mut stream = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
    stream.extend_from_slice(OK_HELLO);
    stream.extend_from_slice(HYPER_400);
    let wire = rewrite(&[Method::PUT], &[&stream]);
    let keep = stream.len() - HYPER_400.len();
    assert_eq!(&wire[..keep], &stream[..keep]);
    assert_eq!(body_of(&wire[keep..])["status"], 400);
}

#[test]
fn a_body_that_looks_like_a_response_is_left_alone() {
    let mut stream = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
        HYPER_400.len()
    )
    .into_bytes();
    stream.extend_from_slice(HYPER_400);
    let wire = rewrite(&[Method::GET], &[&stream]);
    assert_eq!(wire, stream);
}

proptest! {
    #[test]
    fn the_output_does_not_depend_on_how_the_writes_are_split(
        cuts in proptest::collection::vec(0usize..400, 0..12),
    ) {
        let mut stream = OK_HELLO.to_vec();
        stream.extend_from_slice(CHUNKED);
        stream.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        stream.extend_from_slice(HYPER_400);
        let announced = [Method::GET, Method::GET, Method::DELETE];
        let whole = rewrite(&announced, &[&stream]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for c in cuts {
            chunks.push(&stream[at..c]);
            at = c;
        }
        chunks.push(&stream[at..]);
        prop_assert_eq!(rewrite(&announced, &chunks), whole);
    }
}
