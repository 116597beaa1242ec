//! The federation ledger charges a secure round's Skellam noise, not the configured Gaussian.

use cohort_privacy::accounting::conversion::epsilon_from_rdp;
use cohort_privacy::accounting::{Accountant, RdpAccountant, SubsampledGaussian};
use cohort_privacy::noise::LatticeGaussian;
use cohort_privacy::noise::skellam_rdp::{dp_accounting_orders, skellam_rdp};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::domain::{FederationState, StrategyConfig, Weighting};
use crate::sampling::ClientSampler;
use crate::scheduler::{self, RoundStart, SchedulingPolicy};
use crate::storage::tests::{create_fed, enrol, fed_id, open_store, spec};
use crate::storage::{LedgerSubject, RoundCompletion, Storage};

type Acc = DefaultAccountant;

const DIM: usize = 1000;
const DELTA: f64 = 1e-5;

/// Agarwal, Kairouz & Liu's bound at an integer order, written out again here so that the
/// test does not trust the library's transcription.
fn akl_integer_order(alpha: f64, l1: f64, l2: f64, v: f64) -> f64 {
    alpha * l2 * l2 / (2.0 * v)
        + (((2.0 * alpha - 1.0) * l2 * l2 + 6.0 * l1) / (4.0 * v * v)).min(3.0 * l1 / (2.0 * v))
}

fn charged(charge: &SkellamCharge, rounds: u32) -> Acc {
    let mut acc = Acc::fresh();
    for _ in 0..rounds {
        ClientLevel::Skellam(*charge).record(&mut acc).unwrap();
    }
    acc
}

#[test]
fn a_skellam_round_is_charged_its_own_rdp_in_the_shared_state() {
    let l2 = 4096.0 + (DIM as f64).sqrt();
    let charge = SkellamCharge::new(l2 * (DIM as f64).sqrt(), l2, (1.5 * l2).powi(2)).unwrap();
    let acc = charged(&charge, 1);
    // Per order: exactly the Skellam RDP; at integer orders, the paper's formula.
    let orders = dp_accounting_orders();
    assert_eq!(acc.orders(), &orders[..]);
    let expected = skellam_rdp(
        &orders,
        charge.l1_sensitivity(),
        l2,
        charge.central_variance(),
    )
    .unwrap();
    assert_eq!(acc.rdp(), &expected[..]);
    for (a, r) in orders.iter().zip(acc.rdp()) {
        if a.fract() == 0.0 {
            let by_hand =
                akl_integer_order(*a, charge.l1_sensitivity(), l2, charge.central_variance());
            assert!(
                (r - by_hand).abs() <= 1e-12 * by_hand,
                "order {a}: {r} vs {by_hand}"
            );
        }
    }
    // → (ε, δ) with the accountant's own conversion of that vector.
    let (eps, _) = epsilon_from_rdp(&orders, &expected, DELTA).unwrap();
    assert_eq!(LedgerAccountant::epsilon(&acc, DELTA).unwrap(), eps);
    // It composes with Gaussian steps in the same state, order by order.
    let g = Mechanism::new(0.1, 1.1).unwrap();
    let mut mixed = acc.clone();
    LedgerAccountant::record(&mut mixed, g, 5).unwrap();
    let mut gaussian_only = Acc::fresh();
    LedgerAccountant::record(&mut gaussian_only, g, 5).unwrap();
    for ((m, s), g) in mixed.rdp().iter().zip(acc.rdp()).zip(gaussian_only.rdp()) {
        assert!((m - (s + g)).abs() <= 1e-12 * m.max(1e-300));
    }
    // The closed-form cross-check accountant charges the same mechanism, never less.
    let mut unamplified = UnamplifiedRdp::fresh();
    unamplified.record_rdp(&|o| charge.rdp(o)).unwrap();
    assert!(unamplified.epsilon(DELTA).unwrap() >= eps);
}

#[test]
fn bad_charges_are_refused() {
    assert!(SkellamCharge::new(0.0, 1.0, 1.0).is_err());
    assert!(SkellamCharge::new(1.0, f64::NAN, 1.0).is_err());
    assert!(SkellamCharge::new(1.0, 1.0, f64::INFINITY).is_err());
    assert!(SkellamCharge::new(1.0, 1.0, -2.0).is_err());
}

#[test]
fn a_secure_federation_cannot_be_charged_without_its_noise_plan() {
    let mut s = spec();
    s.update_clip = Some(1.0);
    s.central_noise_multiplier = 1.0;
    s.federation_budget = Some(EpsDelta::new(10.0, DELTA).unwrap());
    s.strategy = StrategyConfig::FedAvg {
        weighting: Weighting::Uniform,
    };
    let secure = crate::domain::TrainingConfig::new(s.clone()).unwrap();
    assert!(ClientLevel::for_round(&secure, DIM, None).is_err());
    s.secure_aggregation = false;
    let plain = crate::domain::TrainingConfig::new(s).unwrap();
    let lattice = LatticeGaussian::plan(1.0, 1.0, DIM).unwrap();
    assert_eq!(
        ClientLevel::for_round(&plain, DIM, None).unwrap(),
        Some(ClientLevel::Lattice(
            LatticeCharge::new(lattice, 1.0).unwrap()
        ))
    );
}

#[test]
fn a_plain_round_is_charged_the_lattice_gaussian_it_adds() {
    let mut s = spec();
    s.secure_aggregation = false;
    s.update_clip = Some(0.5);
    s.central_noise_multiplier = 1.3;
    s.client_sampling_rate = 0.2;
    s.federation_budget = Some(EpsDelta::new(10.0, DELTA).unwrap());
    s.strategy = StrategyConfig::FedAvg {
        weighting: Weighting::Uniform,
    };
    let config = crate::domain::TrainingConfig::new(s.clone()).unwrap();
    // The noise the commit adds is the plan the charge is built from.
    let noise = central_noise(&config, DIM).unwrap().unwrap();
    assert_eq!(noise, LatticeGaussian::plan(0.5, 1.3, DIM).unwrap());
    let level = ClientLevel::for_round(&config, DIM, None).unwrap().unwrap();
    assert_eq!(level.entry_sample_rate(), 0.2);
    assert_eq!(level.entry_noise_multiplier(), noise.noise_multiplier());
    assert!(level.entry_noise_multiplier() >= 1.3);
    // Two rounds compose the mechanism's own (Zhu–Wang amplified) RDP, order by order.
    let mut acc = Acc::fresh();
    level.record(&mut acc).unwrap();
    level.record(&mut acc).unwrap();
    let one = noise.rdp(0.2, acc.orders());
    for (got, r) in acc.rdp().iter().zip(&one) {
        assert!((got - 2.0 * r).abs() <= 1e-12 * got.max(1e-300));
    }
    // Never less than the continuous sampled Gaussian of the same multiplier would charge.
    let mut gaussian = RdpAccountant::new();
    gaussian.step(
        SubsampledGaussian::new(0.2, noise.noise_multiplier()).unwrap(),
        2,
    );
    assert!(
        LedgerAccountant::epsilon(&acc, DELTA).unwrap()
            >= Accountant::epsilon(&gaussian, DELTA).unwrap()
    );
    // No central noise, no plan; a budget without noise cannot be charged.
    s.central_noise_multiplier = 0.0;
    s.federation_budget = None;
    let quiet = crate::domain::TrainingConfig::new(s).unwrap();
    assert_eq!(central_noise(&quiet, DIM).unwrap(), None);
    assert_eq!(ClientLevel::for_round(&quiet, DIM, None).unwrap(), None);
}

proptest! {
    /// Never undercount: at the same variance the Skellam charge is at least the Gaussian's,
    /// unamplified and (all the more) amplified by client sampling, over any number of rounds.
    #[test]
    fn skellam_never_charges_less_than_the_gaussian_of_its_variance(
        bits in 6u32..=16,
        dim in 1u64..2_000_000,
        z in 0.3f64..8.0,
        q in 0.001f64..1.0,
        rounds in 1u32..50,
    ) {
        let l2 = f64::from(1u32 << bits) + (dim as f64).sqrt();
        let l1 = l2 * l2.min((dim as f64).sqrt());
        let v = (z * l2).powi(2);
        let charge = SkellamCharge::new(l1, l2, v).unwrap();
        let skellam = LedgerAccountant::epsilon(&charged(&charge, rounds), DELTA).unwrap();
        let sigma = charge.noise_multiplier();
        let mut gaussian = RdpAccountant::new();
        gaussian.step(SubsampledGaussian::new(1.0, sigma).unwrap(), u64::from(rounds));
        let mut amplified = RdpAccountant::new();
        amplified.step(SubsampledGaussian::new(q, sigma).unwrap(), u64::from(rounds));
        let g = Accountant::epsilon(&gaussian, DELTA).unwrap();
        let a = Accountant::epsilon(&amplified, DELTA).unwrap();
        prop_assert!(skellam >= g, "skellam {} < gaussian {}", skellam, g);
        prop_assert!(g >= a);
    }
}

fn secure_spec(budget: f64) -> crate::domain::TrainingConfigSpec {
    let mut s = spec();
    s.update_clip = Some(1.0);
    s.central_noise_multiplier = 2.0;
    s.min_clients = 3;
    s.federation_budget = Some(EpsDelta::new(budget, DELTA).unwrap());
    s.strategy = StrategyConfig::FedAvg {
        weighting: Weighting::Uniform,
    };
    s
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
fn the_scheduler_charges_a_secure_round_its_planned_skellam_noise_and_stops_at_the_budget() {
    // The charge every round of 4 clients will make, from the plan alone.
    let probe = crate::domain::TrainingConfig::new(secure_spec(100.0)).unwrap();
    let plan = crate::secure_plan::plan(4, DIM, &probe).unwrap();
    let charge = plan.client_level.unwrap();
    let after = |k| LedgerAccountant::epsilon(&charged(&charge, k), DELTA).unwrap();
    // The configured Gaussian (z = 2, q_c = 1) would be charged less than the Skellam noise,
    // so a budget between the two after three rounds tells them apart.
    let gaussian_3 = {
        let mut g = Acc::fresh();
        LedgerAccountant::record(&mut g, Mechanism::new(1.0, 2.0).unwrap(), 3).unwrap();
        LedgerAccountant::epsilon(&g, DELTA).unwrap()
    };
    assert!(after(3) > gaussian_3, "{} vs {gaussian_3}", after(3));
    let budget = (gaussian_3 + after(3)) / 2.0;
    assert!(after(2) < budget && budget < after(3));

    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    create_fed(&store, secure_spec(budget));
    let now = Timestamp::from_millis(50_000);
    for i in 1..=4 {
        enrol(&store, i, Some(EpsDelta::new(1e6, DELTA).unwrap()), now);
    }
    let mut sampler = ClientSampler::with_rng(ChaCha20Rng::seed_from_u64(9));
    let policy = SchedulingPolicy::default();
    for k in 1..=2 {
        let start =
            scheduler::open_round::<Acc, _>(&store, &mut sampler, &fed_id(), &policy, DIM, now)
                .unwrap();
        let RoundStart::Opened { round, secure, .. } = start else {
            panic!("round {k}: {start:?}")
        };
        assert_eq!(
            secure.as_deref(),
            Some(&plan),
            "the round runs the plan it was charged for"
        );
        let fed_entries: Vec<_> = store
            .ledger_entries(&fed_id(), None)
            .unwrap()
            .into_iter()
            .filter(|e| e.subject == LedgerSubject::Federation)
            .collect();
        let last = fed_entries.last().unwrap();
        assert_eq!(fed_entries.len(), k as usize);
        assert!((last.epsilon_after - after(k)).abs() <= 1e-12 * after(k));
        assert_eq!(last.sample_rate, 1.0, "Skellam is charged unamplified");
        assert_eq!(last.noise_multiplier, charge.noise_multiplier());
        assert!(last.noise_multiplier >= 2.0);
        finish(&store, &round, now);
    }
    // The third round's Skellam charge does not fit (its Gaussian would have).
    let start = scheduler::open_round::<Acc, _>(&store, &mut sampler, &fed_id(), &policy, DIM, now)
        .unwrap();
    let RoundStart::FederationStopped { reason } = start else {
        panic!("{start:?}")
    };
    assert!(reason.contains("client-level"), "{reason}");
    assert!(matches!(
        store.federation(&fed_id()).unwrap().state,
        FederationState::Stopped { .. }
    ));
    // Nobody was charged or told for it.
    assert_eq!(store.rounds(&fed_id()).unwrap().len(), 2);
    assert_eq!(store.ledger_entries(&fed_id(), None).unwrap().len(), 2 * 5);
}

#[test]
fn a_secure_round_too_small_to_run_is_skipped_without_charging_anyone() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    let mut s = secure_spec(100.0);
    s.min_clients = 1;
    create_fed(&store, s);
    let now = Timestamp::from_millis(50_000);
    enrol(&store, 1, None, now);
    enrol(&store, 2, None, now);
    let mut sampler = ClientSampler::with_rng(ChaCha20Rng::seed_from_u64(1));
    let start = scheduler::open_round::<Acc, _>(
        &store,
        &mut sampler,
        &fed_id(),
        &SchedulingPolicy::default(),
        DIM,
        now,
    )
    .unwrap();
    let RoundStart::Skipped { round, .. } = start else {
        panic!("{start:?}")
    };
    let reason = format!("{:?}", round.state);
    assert!(reason.contains("at least 3 participants"), "{reason}");
    assert!(store.ledger_entries(&fed_id(), None).unwrap().is_empty());
    assert!(store.federation_account(&fed_id()).unwrap().is_none());
}
