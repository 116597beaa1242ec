//! Store tests over a fresh tempdir-backed SQLite database each, plus fixtures shared with
//! the ledger and scheduler tests.

use std::path::Path;

use cohort_privacy::EpsDelta;

use super::*;
use crate::domain::{
    EnrolmentState, FederationState, RoundState, StrategyConfig, TrainingConfig,
    TrainingConfigSpec, Weighting,
};

pub(crate) fn fed_id() -> FederationId {
    FederationId::parse("mnist").unwrap()
}

pub(crate) fn spec() -> TrainingConfigSpec {
    serde_json::from_value(serde_json::json!({
        "dp_sgd": {"noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1, "batch_sample_rate": 0.5},
        "client_budget": {"epsilon": 50.0, "delta": 1e-5},
        "client_sampling_rate": 1.0,
        "min_clients": 1
    }))
    .unwrap()
}

pub(crate) fn open_store(dir: &Path) -> SqliteStorage {
    SqliteStorage::open(dir).unwrap().0
}

pub(crate) fn create_fed(store: &dyn Storage, spec: TrainingConfigSpec) -> Federation {
    let new = NewFederation {
        id: fed_id(),
        model_spec: serde_json::json!({"kind": "mlp", "layers": [4, 2]}),
        config: TrainingConfig::new(spec).unwrap(),
    };
    store
        .create_federation(&new, b"initial weights", Timestamp::from_millis(1_000))
        .unwrap()
}

pub(crate) fn token(i: u8) -> String {
    format!("{i:02x}").repeat(32)
}

pub(crate) fn fingerprint(i: u8) -> CertFingerprint {
    CertFingerprint::parse(&format!("{:02x}", i.wrapping_add(100)).repeat(32)).unwrap()
}

/// Invites and enrols client `c{i}` with the given budget, seen at `now`.
pub(crate) fn enrol(
    store: &dyn Storage,
    i: u8,
    budget: Option<EpsDelta>,
    now: Timestamp,
) -> Client {
    let id = ClientId::parse(&format!("c{i}")).unwrap();
    store
        .invite_client(&fed_id(), &id, budget, &token(i), now)
        .unwrap();
    store
        .enrol_client(
            &fed_id(),
            &token(i),
            &fingerprint(i),
            Some(100 * u64::from(i) + 100),
            now,
        )
        .unwrap()
}

pub(crate) fn opening(
    store: &dyn Storage,
    participants: &[&Client],
    now: Timestamp,
) -> RoundOpening {
    let number = store.next_round_number(&fed_id()).unwrap();
    RoundOpening {
        federation: fed_id(),
        number,
        base_version: store.latest_model(&fed_id()).unwrap().version,
        participants: participants.iter().map(|c| c.id.clone()).collect(),
        entries: participants
            .iter()
            .map(|c| LedgerEntry {
                round: number,
                subject: LedgerSubject::Client(c.id.clone()),
                sample_rate: 0.5,
                noise_multiplier: 1.0,
                steps: 2,
                sample_count: c.sample_count,
                epsilon_after: 1.0,
                delta: 1e-5,
                recorded_at: now,
            })
            .collect(),
        client_accounts: participants
            .iter()
            .map(|c| {
                let prev = store
                    .client_accounts(&fed_id())
                    .unwrap()
                    .into_iter()
                    .find(|(id, _)| *id == c.id)
                    .map_or(0, |(_, a)| a.revision);
                (
                    c.id.clone(),
                    AccountUpdate {
                        accountant: "{}".into(),
                        epsilon: 1.0,
                        delta: 1e-5,
                        expected_revision: prev,
                    },
                )
            })
            .collect(),
        federation_account: None,
        stage: RoundStage::Training,
        opened_at: now,
    }
}

#[test]
fn first_start_creates_the_data_dir_with_wal_and_full_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (store, report) = SqliteStorage::open(&dir).unwrap();
    assert!(
        report.created
            && report.migrations_applied == migrations::SCHEMA_VERSION
            && report.aborted_rounds.is_empty()
    );
    assert!(dir.join(sqlite::DATABASE_FILE).exists() && dir.join(sqlite::BLOB_DIR).is_dir());
    let conn = store.conn_for_tests();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
    drop(conn);
    drop(store);
    let (_, again) = SqliteStorage::open(&dir).unwrap();
    assert!(!again.created && again.migrations_applied == 0);
}

#[test]
fn federations_and_models() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    let fed = create_fed(&store, spec());
    assert_eq!(fed.state, FederationState::Active);
    assert_eq!(store.federation(&fed_id()).unwrap(), fed);
    assert_eq!(store.federations().unwrap(), vec![fed.clone()]);
    let v0 = store.latest_model(&fed_id()).unwrap();
    assert_eq!((v0.version, v0.round), (VersionNumber::INITIAL, None));
    assert_eq!(store.read_blob(&v0.weights).unwrap(), b"initial weights");
    assert_eq!(v0.weights, fed.initial_weights);

    let new = NewFederation {
        id: fed_id(),
        model_spec: serde_json::Value::Null,
        config: fed.config.clone(),
    };
    let dup = store
        .create_federation(&new, b"x", Timestamp::from_millis(2))
        .unwrap_err();
    assert!(matches!(dup, StorageError::Duplicate { .. }), "{dup}");
    let missing = FederationId::parse("nope").unwrap();
    assert!(matches!(
        store.federation(&missing),
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        store.clients(&missing),
        Err(StorageError::NotFound { .. })
    ));

    store.stop_federation(&fed_id(), "done").unwrap();
    assert_eq!(
        store.federation(&fed_id()).unwrap().state,
        FederationState::Stopped {
            reason: "done".into()
        }
    );
}

#[test]
fn enrolment_tokens_are_one_time_and_certificates_unique() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    create_fed(&store, spec());
    let now = Timestamp::from_millis(5_000);
    let a = ClientId::parse("a").unwrap();
    let invited = store
        .invite_client(&fed_id(), &a, None, &token(1), now)
        .unwrap();
    assert_eq!(invited.enrolment, EnrolmentState::Invited);
    assert_eq!(
        invited.budget,
        EpsDelta::new(50.0, 1e-5).unwrap(),
        "federation default budget"
    );
    assert!(matches!(
        store.invite_client(&fed_id(), &a, None, &token(2), now),
        Err(StorageError::Duplicate { .. })
    ));
    assert!(matches!(
        store.invite_client(&fed_id(), &a, None, "short", now),
        Err(StorageError::Invalid(_))
    ));

    let enrolled = store
        .enrol_client(&fed_id(), &token(1), &fingerprint(1), Some(600), now)
        .unwrap();
    assert_eq!(
        (
            enrolled.enrolment,
            enrolled.fingerprint.clone(),
            enrolled.sample_count
        ),
        (EnrolmentState::Enrolled, Some(fingerprint(1)), Some(600))
    );
    let replay = store
        .enrol_client(&fed_id(), &token(1), &fingerprint(9), None, now)
        .unwrap_err();
    assert!(matches!(replay, StorageError::NotFound { .. }), "{replay}");
    assert_eq!(
        store
            .client_by_fingerprint(&fed_id(), &fingerprint(1))
            .unwrap()
            .id,
        a
    );

    let b = ClientId::parse("b").unwrap();
    store
        .invite_client(
            &fed_id(),
            &b,
            Some(EpsDelta::new(2.0, 1e-6).unwrap()),
            &token(2),
            now,
        )
        .unwrap();
    let clash = store
        .enrol_client(&fed_id(), &token(2), &fingerprint(1), None, now)
        .unwrap_err();
    assert!(matches!(clash, StorageError::Duplicate { .. }), "{clash}");
    assert_eq!(
        store.client(&fed_id(), &b).unwrap().enrolment,
        EnrolmentState::Invited,
        "unchanged"
    );

    store
        .touch_client(&fed_id(), &a, Some(700), Timestamp::from_millis(9_000))
        .unwrap();
    store
        .touch_client(&fed_id(), &a, None, Timestamp::from_millis(8_000))
        .unwrap();
    let a_now = store.client(&fed_id(), &a).unwrap();
    assert_eq!(
        (a_now.last_seen, a_now.sample_count),
        (Some(Timestamp::from_millis(9_000)), Some(700))
    );
    store
        .set_client_budget(&fed_id(), &a, EpsDelta::new(3.0, 1e-5).unwrap())
        .unwrap();
    store.revoke_client(&fed_id(), &a).unwrap();
    let a_now = store.client(&fed_id(), &a).unwrap();
    assert!(a_now.revoked && a_now.budget.epsilon() == 3.0);
    assert!(matches!(
        store.revoke_client(&fed_id(), &ClientId::parse("zz").unwrap()),
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(store.clients(&fed_id()).unwrap().len(), 2);
}

#[test]
fn round_lifecycle_commits_model_and_round_together() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    create_fed(&store, spec());
    let now = Timestamp::from_millis(10_000);
    let c1 = enrol(&store, 1, None, now);
    let c2 = enrol(&store, 2, None, now);
    let round = store
        .open_round(&opening(&store, &[&c1, &c2], now))
        .unwrap();
    assert_eq!(
        round.state,
        RoundState::InProgress {
            stage: RoundStage::Training
        }
    );
    assert_eq!(round.participants, vec![c1.id.clone(), c2.id.clone()]);
    assert_eq!(store.current_round(&fed_id()).unwrap(), Some(round.clone()));

    // A second round cannot open while one is in flight.
    let second = store.open_round(&opening(&store, &[&c1], now)).unwrap_err();
    assert!(matches!(second, StorageError::Conflict { .. }), "{second}");

    store
        .set_round_stage(&fed_id(), round.number, RoundStage::Upload)
        .unwrap();
    let metrics = RoundMetrics::from([("loss".to_owned(), 0.5)]);
    store
        .record_round_metrics(&fed_id(), round.number, &metrics)
        .unwrap();
    let bad = RoundMetrics::from([("loss".to_owned(), f64::NAN)]);
    assert!(matches!(
        store.record_round_metrics(&fed_id(), round.number, &bad),
        Err(StorageError::Invalid(_))
    ));

    let completion = RoundCompletion {
        new_model: Some(NewModel {
            weights: b"weights v1",
            strategy_state: Some(b"moments"),
        }),
        metrics: RoundMetrics::from([("clients".to_owned(), 2.0)]),
        completed_at: Timestamp::from_millis(11_000),
    };
    let done = store
        .complete_round(&fed_id(), round.number, &completion)
        .unwrap();
    assert_eq!(
        done.state,
        RoundState::Completed {
            version: Some(VersionNumber::new(1).unwrap())
        }
    );
    assert_eq!(done.metrics.len(), 2);
    let v1 = store.latest_model(&fed_id()).unwrap();
    assert_eq!((v1.version.get(), v1.round), (1, Some(round.number)));
    assert_eq!(store.read_blob(&v1.weights).unwrap(), b"weights v1");
    assert_eq!(
        store
            .read_blob(v1.strategy_state.as_ref().unwrap())
            .unwrap(),
        b"moments"
    );

    // Completing twice, or touching a finished round, is a conflict.
    assert!(matches!(
        store.complete_round(&fed_id(), round.number, &completion),
        Err(StorageError::Conflict { .. })
    ));
    assert!(matches!(
        store.abort_round(&fed_id(), round.number, &AbortReason::ServerRestarted, now),
        Err(StorageError::Conflict { .. })
    ));

    // A round that keeps the model commits no version.
    let r2 = store.open_round(&opening(&store, &[&c1], now)).unwrap();
    assert_eq!(r2.base_version.get(), 1);
    let keep = RoundCompletion {
        new_model: None,
        metrics: RoundMetrics::new(),
        completed_at: now,
    };
    assert_eq!(
        store
            .complete_round(&fed_id(), r2.number, &keep)
            .unwrap()
            .state,
        RoundState::Completed { version: None }
    );
    assert_eq!(store.latest_model(&fed_id()).unwrap().version.get(), 1);
    assert_eq!(store.rounds(&fed_id()).unwrap().len(), 2);
    let versions: Vec<u64> = store
        .model_versions(&fed_id())
        .unwrap()
        .iter()
        .map(|v| v.version.get())
        .collect();
    assert_eq!(versions, vec![0, 1]);
}

#[test]
fn opening_validates_participants_and_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    create_fed(&store, spec());
    let now = Timestamp::from_millis(10_000);
    let c1 = enrol(&store, 1, None, now);
    let c2 = enrol(&store, 2, None, now);

    let mut uncharged = opening(&store, &[&c1, &c2], now);
    uncharged.entries.pop();
    assert!(matches!(
        store.open_round(&uncharged),
        Err(StorageError::Invalid(_))
    ));

    store.revoke_client(&fed_id(), &c2.id).unwrap();
    assert!(matches!(
        store.open_round(&opening(&store, &[&c1, &c2], now)),
        Err(StorageError::Conflict { .. })
    ));

    let mut wrong_number = opening(&store, &[&c1], now);
    wrong_number.number = RoundNumber::new(5).unwrap();
    for e in &mut wrong_number.entries {
        e.round = wrong_number.number;
    }
    assert!(matches!(
        store.open_round(&wrong_number),
        Err(StorageError::Conflict { .. })
    ));

    // A stale account revision (another scheduler spent first) is a conflict.
    let first = opening(&store, &[&c1], now);
    let stale = first.clone();
    let r = store.open_round(&first).unwrap();
    store
        .abort_round(
            &fed_id(),
            r.number,
            &AbortReason::Operator {
                note: "test".into(),
            },
            now,
        )
        .unwrap();
    let mut stale = stale;
    stale.number = r.number.next();
    for e in &mut stale.entries {
        e.round = stale.number;
    }
    let err = store.open_round(&stale).unwrap_err();
    assert!(matches!(err, StorageError::Conflict { .. }), "{err}");
    // Nothing of the refused opening was written.
    assert_eq!(store.rounds(&fed_id()).unwrap().len(), 1);
    assert_eq!(store.ledger_entries(&fed_id(), None).unwrap().len(), 1);
}

#[test]
fn aborted_rounds_keep_their_ledger_entries_and_entries_are_append_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    create_fed(&store, spec());
    let now = Timestamp::from_millis(10_000);
    let c1 = enrol(&store, 1, None, now);
    let r = store.open_round(&opening(&store, &[&c1], now)).unwrap();
    let reason = AbortReason::TooFewUpdates {
        received: 0,
        min_clients: 1,
    };
    let aborted = store
        .abort_round(&fed_id(), r.number, &reason, now)
        .unwrap();
    assert_eq!(aborted.state, RoundState::Aborted { reason });
    let entries = store.ledger_entries(&fed_id(), Some(&c1.id)).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].steps, entries[0].sample_count), (2, Some(200)));
    assert_eq!(store.client_accounts(&fed_id()).unwrap()[0].1.revision, 1);
    let tamper = store
        .conn_for_tests()
        .execute("DELETE FROM ledger_entries", []);
    assert!(tamper.is_err(), "ledger rows must not be deletable");
    let tamper = store
        .conn_for_tests()
        .execute("UPDATE ledger_entries SET epsilon_after = 0", []);
    assert!(tamper.is_err(), "ledger rows must not be editable");

    let skipped = store
        .record_skipped_round(
            &fed_id(),
            r.number.next(),
            VersionNumber::INITIAL,
            &AbortReason::TooFewSampled {
                sampled: 0,
                min_clients: 1,
            },
            now,
        )
        .unwrap();
    assert!(skipped.participants.is_empty() && matches!(skipped.state, RoundState::Aborted { .. }));
    assert_eq!(store.next_round_number(&fed_id()).unwrap().get(), 3);
}

/// Crash recovery: a store reopened with a round in flight marks it aborted ("server
/// restarted"), keeps every committed round and ledger entry, and the next round starts from
/// the last committed model.
#[test]
fn reopening_aborts_the_in_flight_round_and_resumes_from_the_last_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let now = Timestamp::from_millis(10_000);
    {
        let store = open_store(tmp.path());
        create_fed(&store, spec());
        let c1 = enrol(&store, 1, None, now);
        let r1 = store.open_round(&opening(&store, &[&c1], now)).unwrap();
        let completion = RoundCompletion {
            new_model: Some(NewModel {
                weights: b"committed v1",
                strategy_state: None,
            }),
            metrics: RoundMetrics::new(),
            completed_at: now,
        };
        store
            .complete_round(&fed_id(), r1.number, &completion)
            .unwrap();
        let r2 = store.open_round(&opening(&store, &[&c1], now)).unwrap();
        assert!(r2.state.is_in_progress());
        // The process dies here: a blob was half-written and the round never finished.
        std::fs::write(
            tmp.path().join(sqlite::BLOB_DIR).join(".tmp-crash"),
            b"partial",
        )
        .unwrap();
        // Dropping the store runs no shutdown logic (there is none), so this is what a
        // killed process leaves behind; the HTTP end-to-end test kills a real process.
        drop(store);
    }
    let (store, report) = SqliteStorage::open(tmp.path()).unwrap();
    assert_eq!(
        report.aborted_rounds,
        vec![(fed_id(), RoundNumber::new(2).unwrap())]
    );
    assert_eq!(report.blobs_swept, 1);
    let r2 = store
        .round(&fed_id(), RoundNumber::new(2).unwrap())
        .unwrap();
    assert_eq!(
        r2.state,
        RoundState::Aborted {
            reason: AbortReason::ServerRestarted
        }
    );
    assert!(r2.closed_at.is_some());
    assert_eq!(store.current_round(&fed_id()).unwrap(), None);
    let latest = store.latest_model(&fed_id()).unwrap();
    assert_eq!(latest.version.get(), 1);
    assert_eq!(store.read_blob(&latest.weights).unwrap(), b"committed v1");
    // Both rounds' ledger entries survive: the aborted round's spend still counts.
    assert_eq!(store.ledger_entries(&fed_id(), None).unwrap().len(), 2);
    assert_eq!(store.client_accounts(&fed_id()).unwrap()[0].1.revision, 2);
    // And the next round opens from version 1.
    let c1 = store
        .client(&fed_id(), &ClientId::parse("c1").unwrap())
        .unwrap();
    let r3 = store.open_round(&opening(&store, &[&c1], now)).unwrap();
    assert_eq!((r3.number.get(), r3.base_version.get()), (3, 1));
}

#[test]
fn corrupt_rows_are_reported_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    create_fed(&store, spec());
    store
        .conn_for_tests()
        .execute("UPDATE federations SET config = '{\"dp_sgd\": 1}'", [])
        .unwrap();
    assert!(matches!(
        store.federation(&fed_id()),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn uniform_fedavg_config_round_trips_through_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path());
    let mut s = spec();
    s.strategy = StrategyConfig::FedAdam {
        weighting: Weighting::Uniform,
        server_lr: 0.05,
        beta1: 0.9,
        beta2: 0.99,
        tau: 1e-6,
    };
    let fed = create_fed(&store, s);
    assert_eq!(store.federation(&fed_id()).unwrap().config, fed.config);
}

#[test]
fn a_data_dir_serves_one_process_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let first = open_store(tmp.path());
    let second = SqliteStorage::open(tmp.path()).unwrap_err();
    assert!(matches!(second, StorageError::Conflict { .. }), "{second}");
    drop(first);
    assert!(SqliteStorage::open(tmp.path()).is_ok());
}
