//! Active-mode rounds: honest ones complete; a server that substitutes keys or shows clients
//! different survivor sets is caught before any share is revealed.

use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::ChaCha20Rng;

use super::super::client::{self as plain_client, Step};
use super::super::crypto::SecretKey;
use super::super::harness::{Dropouts, Stage};
use super::*;
use crate::secagg::{AbortReason, Lane, MaskPrg, RoundConfig};

const N: u32 = 8;

fn config() -> RoundConfig {
    // The complete graph on 8 clients, t = 4: any 4 holders reconstruct, 3 cannot.
    RoundConfig {
        round: 11,
        dimension: 9,
        bits: 20,
        neighbours: 7,
        threshold: 4,
        mask_prg: MaskPrg::default(),
    }
}

fn input(id: ClientId) -> Vec<u32> {
    (0..9u32).map(|i| (id * 1000 + i).reduce(20)).collect()
}

fn identities(seed: u64, n: u32) -> (Vec<IdentityKey>, Arc<Identities>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let keys: Vec<IdentityKey> = (0..n)
        .map(|_| IdentityKey::generate_with_rng(&mut rng))
        .collect();
    let registry = Identities::new((0..n).zip(keys.iter().map(IdentityKey::public))).unwrap();
    (keys, Arc::new(registry))
}

/// Stages 1–3 with honest clients and the honest active server; returns the clients waiting
/// to sign, the server after it sent the unmask request, and that request.
fn up_to_unmask_request(
    seed: u64,
) -> (
    Vec<AwaitingSurvivorSet>,
    ActiveServerSession<u32>,
    UnmaskRequest,
    Arc<Identities>,
) {
    let cfg = config();
    let (keys, registry) = identities(seed, N);
    let mut rng = ChaCha20Rng::seed_from_u64(seed + 1);
    let mut server = ActiveServerSession::<u32>::new(cfg, registry.clone()).unwrap();
    let mut clients = Vec::new();
    for (id, key) in (0..).zip(keys) {
        let (c, signed) = SignedAwaitingDirectory::start_with_rng::<u32>(
            id,
            cfg,
            Arc::new(key),
            registry.clone(),
            &mut rng,
        )
        .unwrap();
        server = server
            .handle(ActiveClientMessage::SignedKeys(signed))
            .unwrap();
        clients.push(c);
    }
    let (s, out) = server.close().unwrap();
    let Some(ActiveBroadcast::KeyDirectory(directory)) = out else {
        panic!("no directory");
    };
    server = s;
    let mut stage2 = Vec::new();
    for c in clients {
        let Step::Next(c, shares) = c.handle(directory.clone()).unwrap() else {
            panic!("abort in stage 2");
        };
        server = server
            .handle(ActiveClientMessage::EncryptedShares(shares))
            .unwrap();
        stage2.push(c);
    }
    let (s, out) = server.close().unwrap();
    let Some(ActiveBroadcast::RoutedShares(routed)) = out else {
        panic!("no routing");
    };
    server = s;
    let mut stage3 = Vec::new();
    for (id, (c, r)) in (0..).zip(stage2.into_iter().zip(routed)) {
        let Step::Next(c, masked) = c.handle(r, input(id)).unwrap() else {
            panic!("abort in stage 3");
        };
        server = server
            .handle(ActiveClientMessage::MaskedInput(masked))
            .unwrap();
        stage3.push(c);
    }
    let (s, out) = server.close().unwrap();
    let Some(ActiveBroadcast::UnmaskRequest(request)) = out else {
        panic!("no unmask request");
    };
    (stage3, s, request, registry)
}

#[test]
fn honest_rounds_complete_with_dropouts_at_every_stage() {
    let (keys, registry) = identities(1, 10);
    let cfg = RoundConfig {
        neighbours: 9,
        ..config()
    };
    let drops = Dropouts::none()
        .with(2, Stage::AdvertiseKeys)
        .with(5, Stage::ShareKeys)
        .with(7, Stage::MaskedInput)
        .with(9, Stage::Unmask);
    let outcome = run_round::<u32>(&cfg, keys, &registry, &drops, input).unwrap();
    assert!(outcome.exact(), "{:?}", outcome.result);
    let aggregate = outcome.result.unwrap();
    assert_eq!(aggregate.survivors, vec![0, 1, 3, 4, 6, 8, 9]);
    assert!(outcome.client_aborts.is_empty());
}

#[test]
fn honest_round_on_a_sparse_graph_completes() {
    let (keys, registry) = identities(2, 30);
    let cfg = RoundConfig {
        neighbours: 10,
        threshold: 6,
        ..config()
    };
    let outcome = run_round::<u32>(&cfg, keys, &registry, &Dropouts::none(), input).unwrap();
    assert!(outcome.exact(), "{:?}", outcome.result);
}

#[test]
fn a_substituted_key_is_detected_by_every_client() {
    let cfg = config();
    let (keys, registry) = identities(3, N);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut server = ActiveServerSession::<u32>::new(cfg, registry.clone()).unwrap();
    let mut clients = Vec::new();
    for (id, key) in (0..).zip(keys) {
        let (c, signed) = SignedAwaitingDirectory::start_with_rng::<u32>(
            id,
            cfg,
            Arc::new(key),
            registry.clone(),
            &mut rng,
        )
        .unwrap();
        server = server
            .handle(ActiveClientMessage::SignedKeys(signed))
            .unwrap();
        clients.push(c);
    }
    let (_, out) = server.close().unwrap();
    let Some(ActiveBroadcast::KeyDirectory(honest)) = out else {
        panic!("no directory");
    };

    // The server swaps client 5's mask key for one it knows, keeping 5's signature...
    let server_key = SecretKey::generate(&mut rng);
    let mut swapped = honest.clone();
    swapped.directory.entries[5].mask_pk = server_key.public();
    // ... or re-signs the swapped entry with an identity key of its own.
    let mut resigned = swapped.clone();
    let server_identity = IdentityKey::generate_with_rng(&mut rng);
    resigned.signatures[5] =
        server_identity.sign(&keys_statement(&cfg, &resigned.directory.entries[5]));
    // ... or replays client 5's genuine signature over the same keys from another round.
    let (same_keys, _) = identities(3, N);
    let mut replayed = honest.clone();
    let other_round = RoundConfig {
        round: cfg.round - 1,
        ..cfg
    };
    replayed.signatures[5] = same_keys[5].sign(&keys_statement(
        &other_round,
        &replayed.directory.entries[5],
    ));

    // The plain protocol cannot tell: client 0 accepts the swapped directory and would encrypt
    // shares and derive masks with the server's key.
    let mut plain_rng = ChaCha20Rng::seed_from_u64(5);
    let (plain, own) =
        plain_client::AwaitingDirectory::start_with_rng::<u32>(0, cfg, &mut plain_rng).unwrap();
    let mut plain_dir = swapped.directory.clone();
    plain_dir.entries[0] = own;
    assert!(matches!(plain.handle(plain_dir), Ok(Step::Next(..))));

    let bad = SecAggError::PeerMisbehaved(PeerMisbehaved::BadKeySignature { client: 5 });
    let mut clients = clients.into_iter();
    for directory in [swapped, resigned, replayed] {
        let client = clients.next().unwrap();
        assert_eq!(client.handle(directory).unwrap_err(), bad);
    }
    // A directory with a missing signature is refused too.
    let mut short = honest.clone();
    short.signatures.pop();
    assert!(matches!(
        clients.next().unwrap().handle(short),
        Err(SecAggError::PeerMisbehaved(PeerMisbehaved::BadDirectory(_)))
    ));
    // The untouched directory is accepted.
    assert!(matches!(
        clients.next().unwrap().handle(honest),
        Ok(Step::Next(..))
    ));
}

#[test]
fn the_server_refuses_keys_signed_by_someone_else_and_carries_on() {
    let cfg = config();
    let (keys, registry) = identities(6, N);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let server = ActiveServerSession::<u32>::new(cfg, registry.clone()).unwrap();
    // Client 1 signs with client 2's identity key: refused before it reaches the directory.
    let mut keys = keys.into_iter();
    let _key0 = keys.next();
    let _key1 = keys.next();
    let key2 = Arc::new(keys.next().unwrap());
    let (_, mut forged) = plain_client::AwaitingDirectory::start_with_rng::<u32>(1, cfg, &mut rng)
        .map(|(c, keys)| {
            let signature = key2.sign(&keys_statement(&cfg, &keys));
            (c, SignedKeys { keys, signature })
        })
        .unwrap();
    let rejected = server
        .handle(ActiveClientMessage::SignedKeys(forged.clone()))
        .unwrap_err();
    assert_eq!(
        rejected.error,
        SecAggError::PeerMisbehaved(PeerMisbehaved::BadKeySignature { client: 1 })
    );
    // A client the registry does not know is refused as such.
    forged.keys.client = 99;
    let rejected = rejected
        .session
        .handle(ActiveClientMessage::SignedKeys(forged))
        .unwrap_err();
    assert_eq!(
        rejected.error,
        SecAggError::PeerMisbehaved(PeerMisbehaved::UnknownIdentity { client: 99 })
    );
    // The session is intact: client 2's genuine keys are accepted.
    let (_, signed) =
        SignedAwaitingDirectory::start_with_rng::<u32>(2, cfg, key2, registry, &mut rng).unwrap();
    assert!(
        rejected
            .session
            .handle(ActiveClientMessage::SignedKeys(signed))
            .is_ok()
    );
}

#[test]
fn a_client_whose_identity_is_not_registered_refuses_to_start() {
    let (_, registry) = identities(8, N);
    let stranger = Arc::new(IdentityKey::generate_with_rng(
        &mut ChaCha20Rng::seed_from_u64(9),
    ));
    let err = SignedAwaitingDirectory::start::<u32>(3, config(), stranger, registry).unwrap_err();
    assert!(matches!(err, SecAggError::InvalidConfig(_)), "{err:?}");
}

#[test]
fn the_registry_refuses_weak_and_duplicate_keys() {
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    assert!(Identities::new([(0, identity_point)]).is_err());
    let key = IdentityKey::generate_with_rng(&mut ChaCha20Rng::seed_from_u64(10)).public();
    assert!(Identities::new([(0, key), (0, key)]).is_err());
    assert!(Identities::new([(0, key), (1, key)]).is_ok());
}

/// Clients waiting for signatures, and the signature each made over the view it was shown.
type SplitViews = (
    Vec<(ClientId, AwaitingSurvivorSignatures)>,
    Vec<(ClientId, SignatureBytes)>,
);

/// Clients 0, 1, 2 and 7 are told everybody survived; 3, 4, 5 and 6 that 7 dropped. Each group
/// would reveal shares of client 7: self-mask shares from the first, mask-key shares from the
/// second. Every client signs what it saw.
fn split_views(clients: Vec<AwaitingSurvivorSet>, request: &UnmaskRequest) -> SplitViews {
    let told_7_dropped = UnmaskRequest {
        survivors: (0..7).collect(),
        dropped: vec![7],
    };
    assert_eq!(request.survivors, (0..N).collect::<Vec<_>>());
    let mut waiting = Vec::new();
    let mut signatures = Vec::new();
    for (id, client) in (0..).zip(clients) {
        let view = if [3, 4, 5, 6].contains(&id) {
            told_7_dropped.clone()
        } else {
            request.clone()
        };
        let (next, signed) = client.handle(view).unwrap();
        assert_eq!(signed.from, id);
        signatures.push((id, signed.signature));
        waiting.push((id, next));
    }
    (waiting, signatures)
}

#[test]
fn a_server_showing_different_survivor_sets_is_detected() {
    let (clients, _, request, _) = up_to_unmask_request(20);
    let (waiting, signatures) = split_views(clients, &request);
    // Relaying every signature: each client finds signatures over the other view.
    let all = SurvivorSignatures {
        signatures: signatures.clone(),
    };
    for (id, client) in waiting {
        let err = client.handle(all.clone()).unwrap_err();
        let SecAggError::PeerMisbehaved(PeerMisbehaved::InconsistentSurvivorSet { signer }) = err
        else {
            panic!("client {id}: {err:?}");
        };
        let same_group = [3, 4, 5, 6].contains(&id) == [3, 4, 5, 6].contains(&signer);
        assert!(!same_group, "client {id} blamed {signer} of its own view");
    }
}

#[test]
fn a_server_hiding_the_other_view_gets_no_shares() {
    let (clients, _, request, _) = up_to_unmask_request(21);
    let (waiting, signatures) = split_views(clients, &request);
    // Relaying to each group only its own group's signatures: three matching holders each,
    // below t = 4, so every client stops without revealing a share.
    for (id, client) in waiting {
        let group = [3, 4, 5, 6].contains(&id);
        let own = SurvivorSignatures {
            signatures: signatures
                .iter()
                .filter(|(s, _)| [3, 4, 5, 6].contains(s) == group)
                .copied()
                .collect(),
        };
        let outcome = client.handle(own).unwrap();
        assert!(
            matches!(
                outcome,
                Step::Abort(AbortReason::TooFewSurvivorSignatures {
                    client,
                    signatures: 3,
                    threshold: 4
                }) if client == id
            ),
            "client {id}: {outcome:?}"
        );
    }
}

#[test]
fn the_server_refuses_signatures_over_another_view_and_answers_from_non_signers() {
    let (clients, server, request, _) = up_to_unmask_request(22);
    let mut other = request.clone();
    other.survivors.pop();
    other.dropped.push(7);
    let mut clients = clients.into_iter();
    // Client 0 signs a view the server never sent: refused, session unchanged.
    let (_, wrong) = clients.next().unwrap().handle(other).unwrap();
    let rejected = server
        .handle(ActiveClientMessage::SurvivorSignature(wrong))
        .unwrap_err();
    assert_eq!(
        rejected.error,
        SecAggError::PeerMisbehaved(PeerMisbehaved::InconsistentSurvivorSet { signer: 0 })
    );
    let mut server = *rejected.session;
    let mut waiting = Vec::new();
    for client in clients {
        let (next, signed) = client.handle(request.clone()).unwrap();
        server = server
            .handle(ActiveClientMessage::SurvivorSignature(signed))
            .unwrap();
        waiting.push(next);
    }
    let (server, out) = server.close().unwrap();
    let Some(ActiveBroadcast::SurvivorSignatures(relayed)) = out else {
        panic!("no signatures");
    };
    assert_eq!(relayed.signatures.len(), 7);
    let mut server = server;
    let mut responses = Vec::new();
    for client in waiting {
        let Step::Next((), response) = client.handle(relayed.clone()).unwrap() else {
            panic!("a client with 6 signing holders stopped");
        };
        responses.push(response);
    }
    // Client 0 never got the signatures; an unmask answer in its name is refused.
    let mut forged = responses[0].clone();
    forged.from = 0;
    let rejected = server
        .handle(ActiveClientMessage::UnmaskResponse(forged))
        .unwrap_err();
    assert_eq!(
        rejected.error,
        SecAggError::PeerMisbehaved(PeerMisbehaved::NotInSurvivorSet { client: 0 })
    );
    server = *rejected.session;
    for response in responses {
        server = server
            .handle(ActiveClientMessage::UnmaskResponse(response))
            .unwrap();
    }
    let (done, _) = server.close().unwrap();
    let ActiveServerSession::Done(aggregate) = done else {
        panic!("the round did not finish: {done:?}");
    };
    let mut plain = vec![0u32; 9];
    for id in 0..N {
        for (acc, x) in plain.iter_mut().zip(input(id)) {
            *acc = acc.wrapping_add(x).reduce(20);
        }
    }
    assert_eq!(aggregate.sum, plain);
}
