use cohort_privacy::secagg::{ClientMessage, ClientSession, MessageKind, ServerMessage};
use cohort_protocol::frame::encode_u32;
use rand::SeedableRng;

use super::*;

fn config(min_clients: u32, noise: f64) -> TrainingConfig {
    let mut v = serde_json::json!({
        "dp_sgd": {"noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1,
                   "batch_sample_rate": 0.5},
        "client_budget": {"epsilon": 50.0, "delta": 1e-5},
        "client_sampling_rate": 1.0,
        "min_clients": min_clients,
        "update_clip": 1.0,
        "deadlines": {"training_s": 5, "key_exchange_s": 5, "upload_s": 5, "unmask_s": 5},
    });
    if noise > 0.0 {
        v["central_noise_multiplier"] = serde_json::json!(noise);
        v["federation_budget"] = serde_json::json!({"epsilon": 10.0, "delta": 1e-5});
        v["strategy"] = serde_json::json!({"name": "fed_avg", "weighting": "uniform"});
    }
    serde_json::from_value(v).unwrap()
}

fn names(n: usize) -> Vec<ClientId> {
    (0..n)
        .map(|i| ClientId::parse(&format!("site-{i:02}")).unwrap())
        .collect()
}

struct Sim {
    round: SecureRound,
    clients: Vec<(ClientId, Option<ClientSession>)>,
    plain: Vec<Vec<u32>>,
}

const DIM: usize = 6;

impl Sim {
    fn new(n: usize) -> Self {
        let ids = names(n);
        let cfg = config(2, 0.0);
        let round = SecureRound::open(
            7,
            &ids,
            &plan(n, DIM, &cfg).unwrap(),
            &cfg,
            Timestamp::now().plus(std::time::Duration::from_secs(60)),
        )
        .unwrap();
        let q = round.quantizer;
        let mut rng = rand::rngs::ChaCha20Rng::from_seed([3; 32]);
        let mut clients = Vec::new();
        let mut plain = Vec::new();
        for c in ids {
            let task = round.task_for(&c).unwrap();
            let x: Vec<f32> = (0..DIM)
                .map(|j| 0.1 * (task.client_index as f32 + 1.0) - 0.05 * j as f32)
                .collect();
            plain.push(q.encode(&x, &mut rng).unwrap());
            clients.push((c, None));
        }
        let mut sim = Sim {
            round,
            clients,
            plain,
        };
        sim.restart_keys();
        sim
    }

    /// Re-starts every client's session and advertises its keys (the constructor cannot
    /// borrow the round while building clients).
    fn restart_keys(&mut self) {
        for (c, slot) in self.clients.iter_mut() {
            let task = self.round.task_for(c).unwrap();
            let (session, msg) =
                ClientSession::start::<u32>(task.client_index, task.round_config(7).unwrap())
                    .unwrap();
            let ClientMessage::AdvertiseKeys(keys) = msg else {
                panic!()
            };
            self.round
                .submit_keys(c, PublicKeys::from_message(&keys))
                .unwrap();
            *slot = Some(session);
        }
    }

    fn close(&mut self) {
        let s = self.round.begin_close().unwrap();
        let closed = s.close().map_err(|e| e.to_string());
        self.round.finish_close(closed, Timestamp::now());
    }

    /// Runs one client's reply to the stage output it polls; `None` when it drops out.
    fn step(&mut self, i: usize, drop: bool) {
        let (c, slot) = &mut self.clients[i];
        let Some(session) = slot.take() else { return };
        if drop {
            return;
        }
        let msg = match self.round.stage() {
            SecAggStage::ShareKeys => match self.round.directory_for(c).unwrap() {
                StagePoll::Ready { value } => {
                    ServerMessage::KeyDirectory(value.into_message().unwrap())
                }
                _ => return,
            },
            SecAggStage::MaskedInput => match self.round.routed_for(c).unwrap() {
                StagePoll::Ready { value } => {
                    let id = self.round.task_for(c).unwrap().client_index;
                    ServerMessage::RoutedShares(value.into_message(id).unwrap())
                }
                _ => return,
            },
            SecAggStage::Unmask => match self.round.unmask_for(c).unwrap() {
                StagePoll::Ready { value } => ServerMessage::UnmaskRequest(value.into_message()),
                _ => return,
            },
            other => panic!("no client step at {other:?}"),
        };
        let (mut next, mut reply) = session.handle::<u32>(msg).unwrap();
        if next.expects() == MessageKind::Input {
            // The shares are routed: the client masks its (trained, encoded) input now.
            let (masked, msg) = next.mask(self.plain[i].clone()).unwrap();
            (next, reply) = (masked, Some(msg));
        }
        *slot = Some(next);
        match reply {
            Some(ClientMessage::EncryptedShares(m)) => {
                self.round
                    .submit_shares(c, SharesUpload::from_message(&m))
                    .unwrap();
            }
            Some(ClientMessage::MaskedInput(m)) => {
                self.round.submit_masked(c, &encode_u32(&m.vector)).unwrap();
            }
            Some(ClientMessage::UnmaskResponse(m)) => {
                self.round
                    .submit_unmask(c, UnmaskShares::from_message(&m))
                    .unwrap();
            }
            _ => {}
        }
    }
}

fn run(n: usize, drops: &[(usize, SecAggStage)]) -> (Sim, Result<SecureSum, String>, Vec<u32>) {
    let mut sim = Sim::new(n);
    let dropped = |i: usize, stage: SecAggStage| drops.iter().any(|&(d, s)| d == i && s <= stage);
    sim.close();
    for stage in [
        SecAggStage::ShareKeys,
        SecAggStage::MaskedInput,
        SecAggStage::Unmask,
    ] {
        if sim.round.is_finished() {
            break;
        }
        assert_eq!(sim.round.stage(), stage);
        for i in 0..n {
            sim.step(i, dropped(i, stage));
        }
        sim.close();
    }
    let bits = sim.round.config.bits;
    let mut expected = vec![0u32; DIM];
    for i in 0..n {
        if !dropped(i, SecAggStage::MaskedInput) {
            for (e, v) in expected.iter_mut().zip(&sim.plain[i]) {
                *e = e.wrapping_add(*v) & ((1u64 << bits) - 1) as u32;
            }
        }
    }
    let q = sim.round.quantizer;
    let expected = q.decode(&expected).iter().map(|v| v.to_bits()).collect();
    let round = std::mem::replace(
        &mut sim.round,
        SecureRound::open(
            8,
            &names(3),
            &plan(3, DIM, &config(2, 0.0)).unwrap(),
            &config(2, 0.0),
            Timestamp::now(),
        )
        .unwrap(),
    );
    let sum = round.into_sum();
    (sim, sum, expected)
}

#[test]
fn a_full_round_sums_exactly_what_the_clients_quantised() {
    let (_, sum, expected) = run(5, &[]);
    let sum = sum.unwrap();
    assert_eq!(sum.survivors, 5);
    let got: Vec<u32> = sum.sum.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, expected);
}

#[test]
fn dropouts_at_the_masked_and_unmask_stages_still_give_the_survivors_sum() {
    let (_, sum, expected) = run(
        7,
        &[(1, SecAggStage::MaskedInput), (4, SecAggStage::Unmask)],
    );
    let sum = sum.unwrap();
    assert_eq!(sum.survivors, 6);
    let got: Vec<u32> = sum.sum.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, expected);
}

#[test]
fn too_many_dropouts_abort_with_the_stage_and_reason() {
    let drops: Vec<_> = (0..4).map(|i| (i, SecAggStage::ShareKeys)).collect();
    let (_, sum, _) = run(5, &drops);
    let reason = sum.unwrap_err();
    assert!(reason.contains("stage share_keys"), "{reason}");
}

#[test]
fn resends_are_idempotent_and_conflicting_or_late_messages_get_409() {
    let mut sim = Sim::new(4);
    let c = sim.clients[0].0.clone();
    // Same keys again: same receipt. Different keys: 409.
    let task = sim.round.task_for(&c).unwrap();
    let (_, msg) =
        ClientSession::start::<u32>(task.client_index, task.round_config(7).unwrap()).unwrap();
    let ClientMessage::AdvertiseKeys(other) = msg else {
        panic!()
    };
    let err = sim
        .round
        .submit_keys(&c, PublicKeys::from_message(&other))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Conflict {
                slug: "duplicate-message",
                ..
            }
        ),
        "{err:?}"
    );
    sim.close();
    // Stage 1 is closed now: new keys are late.
    let stranger = ClientId::parse("stranger").unwrap();
    assert!(matches!(
        sim.round
            .submit_keys(&stranger, PublicKeys::from_message(&other)),
        Err(ApiError::Forbidden(_))
    ));
    let err = sim
        .round
        .submit_masked(&c, &encode_u32(&[0; DIM]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Conflict {
                slug: "stage-not-open",
                ..
            }
        ),
        "{err:?}"
    );
    sim.step(0, false);
    // Replaying the identical shares message is fine.
    let poll = sim.round.routed_for(&c).unwrap();
    assert!(matches!(poll, StagePoll::Wait { .. }));
}

#[test]
fn plan_refuses_tiny_rounds_and_calibrates_noise_for_the_minimum_survivors() {
    assert!(
        plan(2, 10, &config(1, 0.0))
            .unwrap_err()
            .contains("at least 3")
    );
    let p = plan(10, 1000, &config(4, 1.0)).unwrap();
    assert!(p.task.bits <= 32);
    assert!(p.task.skellam_mu > 0.0);
    assert!(p.min_survivors >= 4);
    assert!(p.noise_multiplier >= 1.0, "{}", p.noise_multiplier);
    let charge = p.client_level.unwrap();
    assert_eq!(charge.noise_multiplier(), p.noise_multiplier);
    let p_bits = p.task.quantizer.precision_bits;
    assert_eq!(
        charge.l2_sensitivity(),
        f64::from(1u32 << p_bits) + 1000f64.sqrt()
    );
    assert_eq!(
        charge.central_variance(),
        2.0 * p.min_survivors as f64 * p.task.skellam_mu
    );
    let quiet = plan(10, 1000, &config(4, 0.0)).unwrap();
    assert_eq!(quiet.task.skellam_mu, 0.0);
    assert!(quiet.client_level.is_none());
    // A plan made for 10 cannot open a round of 9.
    assert!(
        SecureRound::open(1, &names(9), &quiet, &config(4, 0.0), Timestamp::now())
            .unwrap_err()
            .contains("plan is for 10")
    );
    assert!(quiet.task.threshold as usize <= quiet.task.neighbours as usize);
}

#[test]
fn keys_close_once_everyone_advertised_and_masked_inputs_get_the_training_time() {
    let mut sim = Sim::new(4);
    // Every sampled client advertised (before training): the key stage is due now, although
    // its deadline is a minute away.
    assert!(sim.round.due(Timestamp::now()));
    sim.close();
    assert_eq!(sim.round.stage(), SecAggStage::ShareKeys);
    for i in 0..4 {
        sim.step(i, false);
    }
    let closed_at = Timestamp::now();
    sim.close();
    assert_eq!(sim.round.stage(), SecAggStage::MaskedInput);
    // The clients train between their shares and their masked input: that stage, and only
    // that one, is given the training deadline.
    let d = *config(2, 0.0).deadlines();
    assert!(sim.round.stage_deadline >= closed_at.plus(d.training() + d.upload()));
    assert!(!sim.round.due(Timestamp::now()));
}
