//! Crash tests: a real child process writing rounds is killed with SIGKILL at arbitrary
//! moments, and every restart must find a consistent store.

use super::tests::{create_fed, enrol, fed_id, opening, spec};
use super::*;
use crate::domain::RoundState;

const CRASH_DIR_ENV: &str = "COHORT_TEST_CRASH_DIR";

/// Not a test on its own: the body of the child process that `kill_9_at_any_moment_loses_nothing`
/// starts and kills. It runs rounds as fast as it can until it is killed.
#[test]
#[ignore = "runs only as the child of kill_9_at_any_moment_loses_nothing"]
fn kill_9_child() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let (store, _) = SqliteStorage::open(&dir).unwrap();
    let now = Timestamp::from_millis(10_000);
    if store.federation(&fed_id()).is_err() {
        create_fed(&store, spec());
        for i in 1..=3 {
            enrol(&store, i, None, now);
        }
    }
    let clients = store.clients(&fed_id()).unwrap();
    for i in 0u64.. {
        let participants: Vec<&Client> = clients
            .iter()
            .filter(|c| (i + c.id.as_str().len() as u64).is_multiple_of(2) || i.is_multiple_of(3))
            .collect();
        let round = store
            .open_round(&opening(&store, &participants, now))
            .unwrap();
        let weights = vec![(i % 251) as u8; 64 * 1024];
        if i % 4 == 3 {
            store
                .abort_round(
                    &fed_id(),
                    round.number,
                    &AbortReason::Operator {
                        note: "child".into(),
                    },
                    now,
                )
                .unwrap();
        } else {
            let completion = RoundCompletion {
                new_model: Some(NewModel {
                    weights: &weights,
                    strategy_state: None,
                }),
                metrics: RoundMetrics::new(),
                completed_at: now,
            };
            store
                .complete_round(&fed_id(), round.number, &completion)
                .unwrap();
        }
    }
}

/// Kills a process that is writing rounds at arbitrary moments (SIGKILL: no destructors, no
/// flush) and checks that every restart finds a consistent store: no round in flight, every
/// round's participants charged, every account's revision equal to its rounds, every model
/// version's blob intact, and the next round opening from the latest version.
#[test]
fn kill_9_at_any_moment_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rounds_seen = 0;
    for (attempt, delay_ms) in [150u64, 260, 370, 480].into_iter().enumerate() {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "storage::crash_tests::kill_9_child",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let (store, report) = SqliteStorage::open(tmp.path()).unwrap();
        if store.federation(&fed_id()).is_err() {
            continue; // killed before the federation was created: nothing to check
        }
        assert!(
            report.aborted_rounds.len() <= 1,
            "attempt {attempt}: {report:?}"
        );
        assert_eq!(store.current_round(&fed_id()).unwrap(), None);
        let rounds = store.rounds(&fed_id()).unwrap();
        let entries = store.ledger_entries(&fed_id(), None).unwrap();
        let charged: usize = rounds.iter().map(|r| r.participants.len()).sum();
        assert_eq!(
            entries.len(),
            charged,
            "attempt {attempt}: every participant charged exactly once"
        );
        for (client, account) in store.client_accounts(&fed_id()).unwrap() {
            let joined = rounds
                .iter()
                .filter(|r| r.participants.contains(&client))
                .count() as u64;
            assert_eq!(
                account.revision, joined,
                "attempt {attempt}: account of {client}"
            );
        }
        let completed = rounds
            .iter()
            .filter(|r| matches!(r.state, RoundState::Completed { version: Some(_) }))
            .count();
        let latest = store.latest_model(&fed_id()).unwrap();
        assert_eq!(
            latest.version.get() as usize,
            completed,
            "attempt {attempt}"
        );
        for v in 0..=latest.version.get() {
            let mv = store
                .model_version(&fed_id(), VersionNumber::new(v).unwrap())
                .unwrap();
            store.read_blob(&mv.weights).unwrap();
        }
        assert!(
            rounds.len() >= rounds_seen,
            "committed rounds never disappear"
        );
        rounds_seen = rounds.len();
    }
    assert!(
        rounds_seen > 0,
        "the child never got a round in; raise the delays"
    );
}
