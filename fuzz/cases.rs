//! What each fuzz target checks, shared by the coverage-guided targets (`fuzz_targets/`, run by
//! `make fuzz`) and the corpus replay that runs in `make test` (`tests/fuzz_corpus.rs`). Each
//! case takes arbitrary bytes and must not panic; where a decoder accepts its input, the case
//! also checks what must then hold (a frame re-encodes to the same bytes, a model to the same
//! values). The cases that need `cohort-client` (which links libtorch) are in
//! `cases_client.rs`.

use cohort_privacy::secagg::client::{AwaitingDirectory, Step};
use cohort_privacy::secagg::server::Broadcast;
use cohort_privacy::secagg::{
    ClientId, ClientMessage, KeyDirectory, MaskPrg, MaskedInput, RoundConfig, RoutedShares,
    ServerSession, UnmaskRequest,
};
use cohort_protocol::frame::{self, Dtype, FrameView};
use cohort_protocol::secagg::{
    Directory, PublicKeys, Routed, SecAggTask, SharesUpload, StagePoll, StageReceipt, UnmaskList,
    UnmaskShares,
};

/// The vector frame decoder: every accepted frame re-encodes to exactly its bytes. The input
/// is also tried with its CRC-32 trailer recomputed, so the checks behind the checksum are
/// reached too.
pub fn frame(data: &[u8]) {
    check_frame(data);
    if data.len() >= frame::HEADER_LEN {
        let mut fixed = data.to_vec();
        fixed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
        check_frame(&fixed);
    }
}

fn check_frame(data: &[u8]) {
    let Ok(view) = FrameView::parse(data) else {
        return;
    };
    let n = view.len();
    assert_eq!(view.iter_f64().count(), n);
    let encoded = match view.dtype() {
        Dtype::F32 => {
            let values = view.to_f32_vec().expect("an f32 frame has f32 values");
            let mut into = Vec::new();
            assert!(view.f32_into(&mut into));
            assert_eq!(values.len(), n);
            assert!(
                values
                    .iter()
                    .zip(&into)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            if let Some(i) = view.first_non_finite() {
                assert!(!values[i].is_finite() && values[..i].iter().all(|v| v.is_finite()));
            } else {
                assert!(values.iter().all(|v| v.is_finite()));
            }
            frame::encode_f32(&values)
        }
        Dtype::U32 => {
            let values = view.to_u32_vec().expect("a u32 frame has u32 values");
            assert_eq!(values.len(), n);
            frame::encode_u32(&values)
        }
        Dtype::F64 => frame::encode_f64(&view.iter_f64().collect::<Vec<_>>()),
        _ => return,
    };
    assert_eq!(encoded, data, "a frame re-encodes to its own bytes");
}

/// The server's safetensors loader: an accepted model serialises and parses back to the same
/// layout and values.
pub fn safetensors_server(data: &[u8]) {
    use cohort_server::model::ModelLayout;
    let Ok((layout, values)) = ModelLayout::parse(data) else {
        return;
    };
    assert_eq!(values.len(), layout.num_params());
    let again = layout
        .serialize(&values)
        .expect("a parsed model serialises");
    let (layout2, values2) = ModelLayout::parse(&again).expect("a serialised model parses");
    assert_eq!(layout2.num_params(), layout.num_params());
    assert!(
        values
            .iter()
            .zip(&values2)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

/// Every SecAgg+ wire message: the first byte picks one; the rest is its body. Messages a
/// client sends are injected for one client of an otherwise honest five-client round and
/// handed to the server's state machine; messages the server sends are handed to one
/// client's. A refused message must leave the round able to continue without its sender.
pub fn secagg(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        0 => round(Tamper::Keys(body), None),
        1 => round(Tamper::Directory(body), None),
        2 => round(Tamper::Shares(body), None),
        3 => round(Tamper::Routed(body), None),
        4 => round(Tamper::Masked(body), None),
        5 => round(Tamper::UnmaskList(body), None),
        6 => round(Tamper::UnmaskShares(body), None),
        _ => polls(body),
    }
}

/// The answers and task descriptions a client parses.
fn polls(body: &[u8]) {
    let _ = serde_json::from_slice::<StagePoll<Directory>>(body).map(|p| {
        if let StagePoll::Ready { value } = p {
            let _ = value.into_message();
        }
    });
    let _ = serde_json::from_slice::<StagePoll<Routed>>(body).map(|p| {
        if let StagePoll::Ready { value } = p {
            let _ = value.into_message(0);
        }
    });
    let _ = serde_json::from_slice::<StagePoll<UnmaskList>>(body).map(|p| {
        if let StagePoll::Ready { value } = p {
            let _ = value.into_message();
        }
    });
    let _ = serde_json::from_slice::<StageReceipt>(body);
    if let Ok(task) = serde_json::from_slice::<SecAggTask>(body) {
        if let Ok(config) = task.round_config(1) {
            let _ = config.validate::<u32>();
        }
        let _ = task.quantizer.quantizer();
    }
}

/// Seeds for [`secagg`]: the honest messages of [`VICTIM`] in the very round the case runs
/// (same keys), one per selector, so the fuzzer starts from inputs the state machines accept.
pub fn secagg_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    round(Tamper::Nothing, Some(&mut seeds));
    let task = SecAggTask {
        client_index: VICTIM,
        participants: CLIENTS,
        dimension: 4,
        bits: 32,
        neighbours: 4,
        threshold: 3,
        quantizer: cohort_protocol::secagg::QuantizerSpec {
            clients: CLIENTS,
            clip: 1.0,
            precision_bits: 16,
            noise_headroom: 1024,
        },
        skellam_mu: 0.0,
    };
    seeds.push(seed(7, &task));
    seeds.push(seed(
        7,
        &StageReceipt {
            round: 1,
            stage: "masked_input".into(),
        },
    ));
    seeds
}

fn seed(selector: u8, message: &impl serde::Serialize) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend(serde_json::to_vec(message).unwrap_or_default());
    out
}

enum Tamper<'a> {
    Nothing,
    Keys(&'a [u8]),
    Directory(&'a [u8]),
    Shares(&'a [u8]),
    Routed(&'a [u8]),
    Masked(&'a [u8]),
    UnmaskList(&'a [u8]),
    UnmaskShares(&'a [u8]),
}

const CLIENTS: u32 = 5;
/// The client whose messages (or whose view of the server's) are replaced.
const VICTIM: ClientId = 2;

fn config() -> RoundConfig {
    RoundConfig {
        round: 1,
        dimension: 4,
        bits: 32,
        neighbours: 4,
        threshold: 3,
        mask_prg: MaskPrg::ChaCha20,
    }
}

/// Hands `msg` to the server; a refusal must give back a session that still runs the round.
fn offer(server: ServerSession<u32>, msg: ClientMessage<u32>) -> ServerSession<u32> {
    let expected = server.expects();
    match server.handle(msg) {
        Ok(next) => next,
        Err(rejection) => {
            let session = *rejection.session;
            assert_eq!(session.expects(), expected, "a refusal changed the stage");
            session
        }
    }
}

fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

/// One round of [`CLIENTS`] honest clients with [`VICTIM`]'s traffic replaced as `tamper`
/// says. Nothing may panic; the round completes or aborts.
fn round(tamper: Tamper<'_>, mut record: Option<&mut Vec<Vec<u8>>>) {
    let mut keep = |id: ClientId, bytes: &dyn Fn() -> Vec<u8>| {
        if id == VICTIM
            && let Some(r) = record.as_mut()
        {
            r.push(bytes());
        }
    };
    use rand::SeedableRng;
    let config = config();
    let mut rng = rand::rngs::ChaCha20Rng::seed_from_u64(7);
    let Ok(mut server) = ServerSession::<u32>::new(config) else {
        return;
    };

    let mut stage1 = Vec::new();
    for id in 0..CLIENTS {
        let Ok((client, keys)) = AwaitingDirectory::start_with_rng::<u32>(id, config, &mut rng)
        else {
            return;
        };
        let msg = match (&tamper, id) {
            (Tamper::Keys(body), VICTIM) => {
                match json::<PublicKeys>(body).map(|k| k.into_message(id)) {
                    Some(Ok(forged)) => forged,
                    _ => continue,
                }
            }
            _ => keys,
        };
        keep(id, &|| seed(0, &PublicKeys::from_message(&msg)));
        server = offer(server, ClientMessage::AdvertiseKeys(msg));
        stage1.push((id, client));
    }
    let Ok((next, Some(Broadcast::KeyDirectory(directory)))) = server.close() else {
        return;
    };
    server = next;

    let mut stage2 = Vec::new();
    for (id, client) in stage1 {
        let seen: KeyDirectory = match (&tamper, id) {
            (Tamper::Directory(body), VICTIM) => {
                match json::<Directory>(body).map(Directory::into_message) {
                    Some(Ok(forged)) => forged,
                    _ => continue,
                }
            }
            _ => directory.clone(),
        };
        keep(id, &|| seed(1, &Directory::from_message(&seen)));
        keep(id, &|| {
            seed(
                7,
                &StagePoll::Ready {
                    value: Directory::from_message(&seen),
                },
            )
        });
        let Ok(Step::Next(client, shares)) = client.handle(seen) else {
            continue;
        };
        let msg = match (&tamper, id) {
            (Tamper::Shares(body), VICTIM) => {
                match json::<SharesUpload>(body).map(|s| s.into_message(id)) {
                    Some(Ok(forged)) => forged,
                    _ => continue,
                }
            }
            _ => shares,
        };
        keep(id, &|| seed(2, &SharesUpload::from_message(&msg)));
        server = offer(server, ClientMessage::EncryptedShares(msg));
        stage2.push((id, client));
    }
    let Ok((next, Some(Broadcast::RoutedShares(routed)))) = server.close() else {
        return;
    };
    server = next;

    let mut stage3 = Vec::new();
    for (id, client) in stage2 {
        let mine: RoutedShares = match (&tamper, id) {
            (Tamper::Routed(body), VICTIM) => {
                match json::<Routed>(body).map(|r| r.into_message(id)) {
                    Some(Ok(forged)) => forged,
                    _ => continue,
                }
            }
            _ => match routed.iter().find(|r| r.to == id) {
                Some(r) => r.clone(),
                None => continue,
            },
        };
        keep(id, &|| seed(3, &Routed::from_message(&mine)));
        let input = vec![id; config.dimension];
        let Ok(Step::Next(client, masked)) = client.handle(mine, input) else {
            continue;
        };
        let msg = match (&tamper, id) {
            (Tamper::Masked(body), VICTIM) => {
                let Some(vector) = FrameView::parse(body).ok().and_then(|v| v.to_u32_vec()) else {
                    continue;
                };
                MaskedInput { from: id, vector }
            }
            _ => masked,
        };
        keep(id, &|| {
            let mut bytes = vec![4];
            bytes.extend(frame::encode_u32(&msg.vector));
            bytes
        });
        server = offer(server, ClientMessage::MaskedInput(msg));
        stage3.push((id, client));
    }
    let Ok((next, Some(Broadcast::UnmaskRequest(request)))) = server.close() else {
        return;
    };
    server = next;

    for (id, client) in stage3 {
        let seen: UnmaskRequest = match (&tamper, id) {
            (Tamper::UnmaskList(body), VICTIM) => match json::<UnmaskList>(body) {
                Some(list) => list.into_message(),
                None => continue,
            },
            _ => request.clone(),
        };
        keep(id, &|| seed(5, &UnmaskList::from_message(&seen)));
        let Ok(response) = client.handle(seen) else {
            continue;
        };
        let msg = match (&tamper, id) {
            (Tamper::UnmaskShares(body), VICTIM) => match json::<UnmaskShares>(body) {
                Some(shares) => shares.into_message(id),
                None => continue,
            },
            _ => response,
        };
        keep(id, &|| seed(6, &UnmaskShares::from_message(&msg)));
        server = offer(server, ClientMessage::UnmaskResponse(msg));
    }
    if let Ok((ServerSession::Done(aggregate), _)) = server.close() {
        assert_eq!(aggregate.sum.len(), config.dimension);
    }
}
