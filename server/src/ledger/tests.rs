use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::domain::{EnrolmentState, FederationState, RoundState, StrategyConfig, Weighting};
use crate::sampling::{ClientSampler, Ineligible};
use crate::scheduler::{self, RoundStart, ScheduleError, SchedulingPolicy};
use crate::storage::tests::{create_fed, enrol, fed_id, open_store};
use crate::storage::{RoundCompletion, Storage};

type Acc = DefaultAccountant;

/// Parameters of the model the scheduler is told about.
const DIM: usize = 1000;

/// The storage tests' federation, with plain (unmasked) rounds: these tests are about the
/// ledger, and a one-client round cannot run secure aggregation.
fn spec() -> crate::domain::TrainingConfigSpec {
    let mut s = crate::storage::tests::spec();
    s.secure_aggregation = false;
    s.update_clip = Some(1.0);
    s
}

fn eps(e: f64) -> EpsDelta {
    EpsDelta::new(e, 1e-5).unwrap()
}

/// ε of `steps` plain Gaussian steps with σ at δ, by brute force over a fine grid of orders
/// (the accountant's coarse grid must never report less).
fn brute_force_epsilon(sigma: f64, steps: u64, delta: f64) -> f64 {
    (1..20_000)
        .map(|i| 1.0 + f64::from(i) * 0.01)
        .map(|a| steps as f64 * a / (2.0 * sigma * sigma) + (1.0 / delta).ln() / (a - 1.0))
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn unamplified_rdp_is_sound_and_composes() {
    let m = Mechanism::new(0.01, 1.1).unwrap();
    let mut acc = UnamplifiedRdp::fresh();
    assert_eq!(
        acc.epsilon(1e-5).unwrap(),
        (1e5f64).ln() / 127.0,
        "no steps: only the conversion term"
    );
    acc.record(m, 10).unwrap();
    let e10 = acc.epsilon(1e-5).unwrap();
    let fine = brute_force_epsilon(1.1, 10, 1e-5);
    assert!(e10 >= fine && e10 <= fine * 1.05, "{e10} vs {fine}");
    let restored = UnamplifiedRdp::from_state(&acc.to_state().unwrap()).unwrap();
    assert_eq!(restored, acc);
    acc.record(m, 10).unwrap();
    assert!(acc.epsilon(1e-5).unwrap() > e10);
    assert!(
        acc.epsilon(0.0).is_err(),
        "delta = 0 has no finite Gaussian epsilon"
    );
    for bad in [
        "",
        "{}",
        r#"{"kind":"other","orders":[2.0],"rdp":[0.0]}"#,
        r#"{"kind":"gaussian-rdp-unamplified","orders":[2.0],"rdp":[-1.0]}"#,
    ] {
        assert!(UnamplifiedRdp::from_state(bad).is_err(), "{bad:?} accepted");
    }
    assert!(Mechanism::new(0.0, 1.0).is_err() && Mechanism::new(0.5, 0.0).is_err());
}

#[test]
fn admission_refuses_what_the_budget_cannot_afford() {
    let m = Mechanism::new(0.5, 1.0).unwrap();
    // One step of σ = 1 costs ≈ 5.3 at δ = 1e-5 (unamplified): fits 6, not 5.
    let one_step = UnamplifiedRdp::fresh()
        .tap(|a| a.record(m, 1).unwrap())
        .epsilon(1e-5)
        .unwrap();
    assert!(one_step > 5.0 && one_step < 6.0, "{one_step}");
    let admitted = admit::<UnamplifiedRdp>(None, eps(6.0), m, 1).unwrap();
    assert_eq!(admitted.update.expected_revision, 0);
    assert!(matches!(
        admit::<UnamplifiedRdp>(None, eps(5.0), m, 1),
        Err(Refusal::WouldExceed { .. })
    ));

    let record = AccountRecord {
        accountant: admitted.update.accountant.clone(),
        epsilon: one_step,
        delta: 1e-5,
        revision: 1,
    };
    assert!(matches!(
        admit::<UnamplifiedRdp>(Some(&record), eps(6.0), m, 1),
        Err(Refusal::WouldExceed { .. })
    ));
    let second = admit::<UnamplifiedRdp>(Some(&record), eps(20.0), m, 1).unwrap();
    assert_eq!(second.update.expected_revision, 1);

    let corrupt = AccountRecord {
        accountant: "garbage".into(),
        ..record
    };
    assert!(matches!(
        admit::<UnamplifiedRdp>(Some(&corrupt), eps(1e9), m, 1),
        Err(Refusal::Unverifiable(_))
    ));
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl<T> Tap for T {}

fn sampler() -> ClientSampler<ChaCha20Rng> {
    ClientSampler::with_rng(ChaCha20Rng::seed_from_u64(42))
}

fn finish(store: &dyn Storage, round: &crate::domain::Round, now: Timestamp) {
    let completion = RoundCompletion {
        new_model: None,
        metrics: Default::default(),
        completed_at: now,
    };
    store
        .complete_round(&fed_id(), round.number, &completion)
        .unwrap();
}

#[test]
fn a_client_near_its_budget_is_not_admitted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    // q = 0.5, E = 1: two steps per round of σ = 1.
    create_fed(&store, spec());
    let now = Timestamp::from_millis(50_000);
    let per_round = Acc::fresh()
        .tap(|a| a.record(Mechanism::new(0.5, 1.0).unwrap(), 2).unwrap())
        .epsilon(1e-5)
        .unwrap();
    let two_rounds = Acc::fresh()
        .tap(|a| a.record(Mechanism::new(0.5, 1.0).unwrap(), 4).unwrap())
        .epsilon(1e-5)
        .unwrap();
    // c1 affords two rounds but not three; c2 affords many; c3 affords none.
    let c1 = enrol(
        &store,
        1,
        Some(eps((two_rounds + 0.01).min(two_rounds * 1.01))),
        now,
    );
    let c2 = enrol(&store, 2, Some(eps(1_000.0)), now);
    let c3 = enrol(&store, 3, Some(eps(per_round * 0.99)), now);
    let policy = SchedulingPolicy::default();

    let mut rounds_with_c1 = 0;
    for _ in 0..3 {
        let start =
            scheduler::open_round::<Acc, _>(&store, &mut sampler(), &fed_id(), &policy, DIM, now)
                .unwrap();
        let RoundStart::Opened {
            round, ineligible, ..
        } = start
        else {
            panic!("{start:?}")
        };
        assert!(!round.participants.contains(&c3.id));
        assert!(ineligible.iter().any(|(id, why)| *id == c3.id
            && matches!(why, Ineligible::Budget(Refusal::WouldExceed { .. }))));
        if round.participants.contains(&c1.id) {
            rounds_with_c1 += 1;
        }
        assert!(round.participants.contains(&c2.id));
        finish(&store, &round, now);
    }
    assert_eq!(
        rounds_with_c1, 2,
        "c1 must be refused once its next round would exceed its budget"
    );
    let entries = store.ledger_entries(&fed_id(), Some(&c1.id)).unwrap();
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|e| e.epsilon_after <= c1.budget.epsilon())
    );
    assert!(
        store
            .ledger_entries(&fed_id(), Some(&c3.id))
            .unwrap()
            .is_empty()
    );

    // Spend is visible on the dashboard and never above budget.
    let clients = store.clients(&fed_id()).unwrap();
    let accounts = store
        .client_accounts(&fed_id())
        .unwrap()
        .into_iter()
        .collect();
    let spends = client_spends::<Acc>(&clients, &accounts);
    let c1_spend = spends.iter().find(|s| s.client == c1.id).unwrap();
    assert!((c1_spend.epsilon.unwrap() - two_rounds).abs() < 1e-9);
    assert_eq!(
        spends.iter().find(|s| s.client == c3.id).unwrap().epsilon,
        Some(0.0)
    );
}

#[test]
fn a_corrupt_account_counts_as_exhausted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    create_fed(&store, spec());
    let now = Timestamp::from_millis(50_000);
    let c1 = enrol(&store, 1, Some(eps(1_000.0)), now);
    let start = scheduler::open_round::<Acc, _>(
        &store,
        &mut sampler(),
        &fed_id(),
        &SchedulingPolicy::default(),
        DIM,
        now,
    )
    .unwrap();
    let RoundStart::Opened { round, .. } = start else {
        panic!()
    };
    finish(&store, &round, now);
    store
        .conn_for_tests()
        .execute("UPDATE client_accounts SET accountant = 'not json'", [])
        .unwrap();
    let start = scheduler::open_round::<Acc, _>(
        &store,
        &mut sampler(),
        &fed_id(),
        &SchedulingPolicy::default(),
        DIM,
        now,
    )
    .unwrap();
    let RoundStart::Skipped { round, ineligible } = start else {
        panic!("{start:?}")
    };
    assert!(
        matches!(&ineligible[..], [(id, Ineligible::Budget(Refusal::Unverifiable(_)))] if *id == c1.id)
    );
    assert!(round.participants.is_empty());
    let accounts = store
        .client_accounts(&fed_id())
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        client_spends::<Acc>(&store.clients(&fed_id()).unwrap(), &accounts)[0].epsilon,
        None
    );
}

#[test]
fn a_federation_stops_at_its_client_level_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    let mut s = spec();
    s.update_clip = Some(1.0);
    s.central_noise_multiplier = 2.0;
    s.strategy = StrategyConfig::FedAvg {
        weighting: Weighting::Uniform,
    };
    // What each round charges: the lattice Gaussian the commit adds (q_c = 1 here).
    let plan = cohort_privacy::noise::LatticeGaussian::plan(1.0, 2.0, DIM).unwrap();
    let round_charge = ClientLevel::Lattice(LatticeCharge::new(plan, 1.0).unwrap());
    let after = |k: u64| {
        Acc::fresh()
            .tap(|a| {
                for _ in 0..k {
                    round_charge.record(a).unwrap();
                }
            })
            .epsilon(1e-5)
            .unwrap()
    };
    // Budget for exactly three rounds.
    s.federation_budget = Some(eps((after(3) + after(4)) / 2.0));
    create_fed(&store, s);
    let now = Timestamp::from_millis(50_000);
    enrol(&store, 1, Some(eps(1e6)), now);
    let policy = SchedulingPolicy::default();
    for k in 1..=3 {
        let start =
            scheduler::open_round::<Acc, _>(&store, &mut sampler(), &fed_id(), &policy, DIM, now)
                .unwrap();
        let RoundStart::Opened { round, .. } = start else {
            panic!("round {k}: {start:?}")
        };
        let fed_entries: Vec<_> = store
            .ledger_entries(&fed_id(), None)
            .unwrap()
            .into_iter()
            .filter(|e| e.subject == crate::storage::LedgerSubject::Federation)
            .collect();
        assert_eq!(fed_entries.len() as u64, k);
        assert!((fed_entries.last().unwrap().epsilon_after - after(k)).abs() < 1e-9);
        finish(&store, &round, now);
    }
    let start =
        scheduler::open_round::<Acc, _>(&store, &mut sampler(), &fed_id(), &policy, DIM, now)
            .unwrap();
    let RoundStart::FederationStopped { reason } = start else {
        panic!("{start:?}")
    };
    assert!(reason.contains("client-level"), "{reason}");
    assert!(matches!(
        store.federation(&fed_id()).unwrap().state,
        FederationState::Stopped { .. }
    ));
    let again =
        scheduler::open_round::<Acc, _>(&store, &mut sampler(), &fed_id(), &policy, DIM, now)
            .unwrap_err();
    assert!(matches!(again, ScheduleError::Stopped { .. }));
    assert_eq!(
        store.rounds(&fed_id()).unwrap().len(),
        3,
        "no fourth round was opened"
    );
}

#[test]
fn too_few_sampled_skips_without_charging_and_absent_clients_are_not_sampled() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    let mut s = spec();
    s.min_clients = 2;
    create_fed(&store, s);
    let now = Timestamp::from_millis(1_000_000);
    enrol(&store, 1, None, now);
    enrol(&store, 2, None, Timestamp::from_millis(1)); // seen long ago
    let start = scheduler::open_round::<Acc, _>(
        &store,
        &mut sampler(),
        &fed_id(),
        &SchedulingPolicy::default(),
        DIM,
        now,
    )
    .unwrap();
    let RoundStart::Skipped { round, ineligible } = start else {
        panic!("{start:?}")
    };
    assert_eq!(
        round.state,
        RoundState::Aborted {
            reason: crate::domain::AbortReason::TooFewSampled {
                sampled: 1,
                min_clients: 2
            }
        }
    );
    assert!(matches!(
        &ineligible[..],
        [(_, Ineligible::NotSeenRecently)]
    ));
    assert!(store.ledger_entries(&fed_id(), None).unwrap().is_empty());
    assert!(store.client_accounts(&fed_id()).unwrap().is_empty());
    assert_eq!(
        store
            .client(&fed_id(), &ClientId::parse("c1").unwrap())
            .unwrap()
            .enrolment,
        EnrolmentState::Enrolled
    );

    // With the second client back online the round opens, and a second request conflicts.
    store
        .touch_client(&fed_id(), &ClientId::parse("c2").unwrap(), None, now)
        .unwrap();
    let policy = SchedulingPolicy {
        online_window: Duration::from_secs(60),
        ..Default::default()
    };
    let start =
        scheduler::open_round::<Acc, _>(&store, &mut sampler(), &fed_id(), &policy, DIM, now)
            .unwrap();
    let RoundStart::Opened { round, base, .. } = start else {
        panic!("{start:?}")
    };
    assert_eq!(
        (
            round.number.get(),
            round.participants.len(),
            base.version.get()
        ),
        (2, 2, 0)
    );
    let busy =
        scheduler::open_round::<Acc, _>(&store, &mut sampler(), &fed_id(), &policy, DIM, now)
            .unwrap_err();
    assert!(matches!(busy, ScheduleError::RoundInProgress(_)));
    let aborted = scheduler::abort_if_below_minimum(&store, &fed_id(), &round, 1, 2, now)
        .unwrap()
        .unwrap();
    assert!(matches!(aborted.state, RoundState::Aborted { .. }));
    assert_eq!(
        store.ledger_entries(&fed_id(), None).unwrap().len(),
        2,
        "aborted rounds still count"
    );
}

#[test]
fn the_default_accountant_is_amplified_rdp_and_round_trips_through_the_store_format() {
    let m = Mechanism::new(0.01, 1.1).unwrap();
    let mut acc = Acc::fresh();
    acc.record(m, 1000).unwrap();
    let e = acc.epsilon(1e-5).unwrap();
    // The privacy crate's golden value for q = 0.01, σ = 1.1, 1000 steps, δ = 1e-5.
    assert!((e - 1.7118).abs() < 1e-3, "{e}");
    let back = Acc::from_state(&acc.to_state().unwrap()).unwrap();
    assert!(
        (back.epsilon(1e-5).unwrap() - e).abs() <= 1e-12 * e,
        "state must round-trip"
    );
    assert!(
        Acc::from_state(&UnamplifiedRdp::fresh().to_state().unwrap()).is_err(),
        "another kind's state"
    );
    // Amplification only helps: the closed-form unamplified bound is never below it.
    let mut loose = UnamplifiedRdp::fresh();
    loose.record(m, 1000).unwrap();
    assert!(loose.epsilon(1e-5).unwrap() >= e);
}
