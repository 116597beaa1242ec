//! The client half of a secure round: clip, noise and quantise the update, and walk the
//! SecAgg+ client stages over a [`Transport`]: keys and shares ([`share_keys`]) before
//! training, the masked input and unmask shares ([`finish_secure_round`]) after it.

use std::time::{Duration, Instant};

use cohort_privacy::noise::SkellamSampler;
use cohort_privacy::secagg::client::{AwaitingDirectory, AwaitingRoutedShares, Step};
use cohort_protocol::frame::encode_u32;
use cohort_protocol::secagg::{
    PublicKeys, SecAggTask, SharesUpload, StagePoll, StageReceipt, UnmaskShares,
};
use rand::SeedableRng;
use rand::rngs::{ChaCha20Rng, SysRng};
use zeroize::Zeroize;

use super::ParticipantError;
use super::transport::{Call, Transport, TransportError};

/// How calls are repeated after retryable failures: exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The first pause.
    pub initial: Duration,
    /// The longest pause.
    pub max: Duration,
    /// Stop retrying one call after this long.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(15),
            give_up_after: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `attempt` (0-based): `initial·2^attempt` capped at `max`,
    /// times a uniform factor in [0.5, 1.5) so that many clients do not retry in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        let jitter = 0.5 + rand::random::<f64>();
        base.mul_f64(jitter)
    }
}

/// Runs `call` until it succeeds, fails for good, or the policy gives up.
pub async fn with_retries<'a, T>(
    policy: &RetryPolicy,
    mut call: impl FnMut() -> Call<'a, T>,
) -> Result<T, TransportError> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && started.elapsed() < policy.give_up_after => {
                let pause = match &e {
                    TransportError::Status {
                        retry_after: Some(d),
                        ..
                    } => *d,
                    _ => policy.delay(attempt),
                };
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Clips `delta` to the round's update clip, quantises it stochastically into `Z_{2^bits}`
/// and adds this client's share of Skellam noise (all randomness from the OS's CSPRNG).
pub fn encode_update(delta: &[f32], task: &SecAggTask) -> Result<Vec<u32>, ParticipantError> {
    encode_update_from(delta, task, None)
}

/// [`encode_update`] with its randomness (stochastic rounding and Skellam noise) derived from
/// a known 32-byte seed, for reproducible simulations only: anyone who knows the seed can
/// subtract the noise. See [`super::Participant::danger_seed_encoding`].
pub mod danger {
    use super::{ParticipantError, SecAggTask};

    /// Encodes as [`super::encode_update`] does, with every random draw taken from `seed`.
    pub fn encode_update_seeded(
        delta: &[f32],
        task: &SecAggTask,
        seed: [u8; 32],
    ) -> Result<Vec<u32>, ParticipantError> {
        super::encode_update_from(delta, task, Some(seed))
    }
}

fn encode_update_from(
    delta: &[f32],
    task: &SecAggTask,
    seed: Option<[u8; 32]>,
) -> Result<Vec<u32>, ParticipantError> {
    let q = task
        .quantizer
        .quantizer()
        .map_err(|e| ParticipantError::BadTask(e.to_string()))?;
    if q.bits() != task.bits || task.bits > 32 {
        return Err(ParticipantError::BadTask(format!(
            "the quantiser needs {} bits but the round's ring has {}",
            q.bits(),
            task.bits
        )));
    }
    if delta.len() as u64 != task.dimension {
        return Err(ParticipantError::BadTask(format!(
            "the update has {} values, the round expects {}",
            delta.len(),
            task.dimension
        )));
    }
    let mut rng = match seed {
        Some(seed) => ChaCha20Rng::from_seed(seed),
        None => ChaCha20Rng::try_from_rng(&mut SysRng)
            .map_err(|_| ParticipantError::Randomness("the OS random generator failed".into()))?,
    };
    let mut x: Vec<u32> = q
        .encode(delta, &mut rng)
        .map_err(|e| ParticipantError::BadUpdate(e.to_string()))?;
    if task.skellam_mu > 0.0 {
        let sampler = match seed {
            // A second, independent stream: the rounding stream's key with one byte flipped.
            Some(mut seed) => {
                seed[31] ^= 0x5a;
                cohort_privacy::noise::skellam::danger::seeded(task.skellam_mu, seed)
            }
            None => SkellamSampler::from_os_entropy(task.skellam_mu),
        };
        let mut sampler = sampler.map_err(|e| ParticipantError::Randomness(e.to_string()))?;
        let mask = if task.bits == 32 {
            u32::MAX
        } else {
            (1u32 << task.bits) - 1
        };
        for v in &mut x {
            // Two's complement: adding `n as u32` is adding n mod 2^32, then mod 2^bits.
            *v = v.wrapping_add(sampler.sample() as u32) & mask;
        }
    }
    Ok(x)
}

/// How a secure round ended for this client.
#[derive(Debug, Clone, PartialEq)]
pub enum SecureOutcome {
    /// Every stage was answered; the server may now unmask the sum.
    Completed,
    /// The round went on (or ended) without this client, for the given reason.
    Dropped(String),
}

/// What the client spent in a secure round.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureReport {
    /// How it ended.
    pub outcome: SecureOutcome,
    /// CPU time in the SecAgg state machine (keys, shares, masking, unmask shares).
    pub compute: Duration,
    /// Time in calls that send messages (transfer, including the server's handling).
    pub transfer: Duration,
    /// Time spent waiting for stages to close (polls and pauses).
    pub waiting: Duration,
}

enum Polled<T> {
    Ready(T),
    Dropped(String),
}

async fn poll_stage<'a, T>(
    policy: &RetryPolicy,
    waiting: &mut Duration,
    mut poll: impl FnMut() -> Call<'a, StagePoll<T>>,
) -> Result<Polled<T>, ParticipantError> {
    let started = Instant::now();
    let result = loop {
        match with_retries(policy, &mut poll).await? {
            StagePoll::Ready { value } => break Polled::Ready(value),
            StagePoll::Aborted { reason } => break Polled::Dropped(reason),
            StagePoll::Wait { retry_after_ms } => {
                tokio::time::sleep(Duration::from_millis(retry_after_ms.clamp(20, 5_000))).await
            }
            _ => break Polled::Dropped("the server answered with an unknown stage state".into()),
        }
    };
    *waiting += started.elapsed();
    Ok(result)
}

/// A send that the server refused as late or for a client it no longer counts: this
/// client dropped out of the round, which is not an error of the participant.
fn dropped_on_send(e: &TransportError) -> Option<String> {
    match e {
        TransportError::Status {
            status: 409 | 404,
            detail,
            ..
        } => Some(detail.clone()),
        _ => None,
    }
}

async fn send<'a>(
    policy: &RetryPolicy,
    transfer: &mut Duration,
    call: impl FnMut() -> Call<'a, StageReceipt>,
) -> Result<Option<String>, ParticipantError> {
    let started = Instant::now();
    let result = with_retries(policy, call).await;
    *transfer += started.elapsed();
    match result {
        Ok(_) => Ok(None),
        Err(e) => match dropped_on_send(&e) {
            Some(reason) => Ok(Some(reason)),
            None => Err(e.into()),
        },
    }
}

/// Stages 1–2 done (keys advertised, shares sent): the client's SecAgg state while it trains.
/// Its secrets (the self-mask seed, the pairwise seeds) zeroize if it is dropped unused.
#[derive(Debug)]
pub struct KeysShared {
    round: u64,
    stage: AwaitingRoutedShares,
    report: SecureReport,
}

impl KeysShared {
    /// What stages 1–2 cost so far.
    pub fn report(&self) -> &SecureReport {
        &self.report
    }
}

/// How stages 1–2 ended for this client.
#[derive(Debug)]
pub enum KeyExchange {
    /// Keys and shares are in: train, then [`finish_secure_round`] with the encoded update.
    Shared(KeysShared),
    /// The round went on without this client before it trained (its report says why).
    Dropped(SecureReport),
}

/// SecAgg+ stages 1–2 of round `round`: advertise keys, wait for the key directory, send the
/// encrypted shares. None of it depends on the update, so a participant runs it before it
/// trains (and while it downloads the model): the key stage then closes as soon as every
/// sampled client has asked for its task, not when the slowest has trained.
pub async fn share_keys<T: Transport + ?Sized>(
    transport: &T,
    round: u64,
    task: &SecAggTask,
    policy: &RetryPolicy,
) -> Result<KeyExchange, ParticipantError> {
    let mut report = SecureReport {
        outcome: SecureOutcome::Completed,
        compute: Duration::ZERO,
        transfer: Duration::ZERO,
        waiting: Duration::ZERO,
    };
    let config = task
        .round_config(round)
        .map_err(|e| ParticipantError::BadTask(e.to_string()))?;
    let dropped = |mut report: SecureReport, why: String| {
        report.outcome = SecureOutcome::Dropped(why);
        Ok(KeyExchange::Dropped(report))
    };

    // Stage 1: advertise keys.
    let started = Instant::now();
    let (stage, keys) = AwaitingDirectory::start::<u32>(task.client_index, config)?;
    report.compute += started.elapsed();
    let keys = PublicKeys::from_message(&keys);
    if let Some(why) = send(policy, &mut report.transfer, || {
        transport.send_keys(round, keys.clone())
    })
    .await?
    {
        return dropped(report, why);
    }

    // Stage 2: shares, once the directory is out.
    let directory = match poll_stage(policy, &mut report.waiting, || {
        transport.poll_directory(round)
    })
    .await?
    {
        Polled::Ready(d) => d,
        Polled::Dropped(why) => return dropped(report, why),
    };
    let directory = directory
        .into_message()
        .map_err(|e| ParticipantError::Protocol(e.to_string()))?;
    let started = Instant::now();
    let step = stage.handle(directory)?;
    report.compute += started.elapsed();
    let (stage, shares) = match step {
        Step::Next(stage, shares) => (stage, SharesUpload::from_message(&shares)),
        Step::Abort(reason) => {
            return dropped(report, format!("this client stopped the round: {reason}"));
        }
    };
    if let Some(why) = send(policy, &mut report.transfer, || {
        transport.send_shares(round, shares.clone())
    })
    .await?
    {
        return dropped(report, why);
    }
    Ok(KeyExchange::Shared(KeysShared {
        round,
        stage,
        report,
    }))
}

/// SecAgg+ stages 3–4 after [`share_keys`]: waits for the shares routed to this client, masks
/// `input` (the trained update, already encoded by [`encode_update`]) and uploads it, then
/// answers the unmask request. `input` is zeroized on every path that does not send it masked.
pub async fn finish_secure_round<T: Transport + ?Sized>(
    transport: &T,
    task: &SecAggTask,
    keys: KeysShared,
    mut input: Vec<u32>,
    policy: &RetryPolicy,
) -> Result<SecureReport, ParticipantError> {
    let KeysShared {
        round,
        stage,
        mut report,
    } = keys;
    let dropped = |mut report: SecureReport, why: String| {
        report.outcome = SecureOutcome::Dropped(why);
        Ok(report)
    };

    // Stage 3: the masked input, once the shares are routed.
    let routed =
        match poll_stage(policy, &mut report.waiting, || transport.poll_routed(round)).await {
            Ok(Polled::Ready(r)) => r,
            Ok(Polled::Dropped(why)) => {
                input.zeroize();
                return dropped(report, why);
            }
            Err(e) => {
                input.zeroize();
                return Err(e);
            }
        };
    let routed = match routed.into_message(task.client_index) {
        Ok(r) => r,
        Err(e) => {
            input.zeroize();
            return Err(ParticipantError::Protocol(e.to_string()));
        }
    };
    // Masking expands one keystream per neighbour over the whole model: CPU work that must
    // not stall the async runtime (a simulator runs many participants on one).
    let started = Instant::now();
    let masked = tokio::task::spawn_blocking(move || match stage.handle(routed, input) {
        Ok(Step::Next(next, mut m)) => {
            let frame = encode_u32(&m.vector);
            m.vector.zeroize();
            Ok(Ok((next, frame)))
        }
        Ok(Step::Abort(reason)) => Ok(Err(reason)),
        Err(e) => Err(e),
    })
    .await
    .map_err(|e| ParticipantError::Protocol(format!("the masking task failed: {e}")))??;
    report.compute += started.elapsed();
    let (stage, frame) = match masked {
        Ok(pair) => pair,
        Err(reason) => return dropped(report, format!("this client stopped the round: {reason}")),
    };
    if let Some(why) = send(policy, &mut report.transfer, || {
        transport.send_masked(round, frame.clone())
    })
    .await?
    {
        return dropped(report, why);
    }

    // Stage 4: the unmask shares.
    let request =
        match poll_stage(policy, &mut report.waiting, || transport.poll_unmask(round)).await? {
            Polled::Ready(r) => r,
            Polled::Dropped(why) => return dropped(report, why),
        };
    let started = Instant::now();
    let response = stage.handle(request.into_message())?;
    report.compute += started.elapsed();
    let shares = UnmaskShares::from_message(&response);
    if let Some(why) = send(policy, &mut report.transfer, || {
        transport.send_unmask(round, shares.clone())
    })
    .await?
    {
        return dropped(report, why);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_protocol::secagg::QuantizerSpec;

    fn task(mu: f64) -> SecAggTask {
        SecAggTask {
            client_index: 0,
            participants: 4,
            dimension: 3,
            bits: 20,
            neighbours: 3,
            threshold: 2,
            quantizer: QuantizerSpec {
                clients: 4,
                clip: 1.0,
                precision_bits: 16,
                noise_headroom: 0,
            },
            skellam_mu: mu,
        }
    }

    #[test]
    fn encoding_clips_and_stays_in_the_ring() {
        let t = task(0.0);
        let x = encode_update(&[3.0, 4.0, 0.0], &t).unwrap();
        let q = t.quantizer.quantizer().unwrap();
        let back = q.decode(&x);
        // Clipped from norm 5 to norm 1: (0.6, 0.8, 0).
        assert!((back[0] - 0.6).abs() < 1e-4 && (back[1] - 0.8).abs() < 1e-4);
        assert!(x.iter().all(|&v| v < 1 << 20));
        assert!(encode_update(&[1.0], &t).is_err());
        let mut wrong = t;
        wrong.bits = 21;
        assert!(encode_update(&[0.0; 3], &wrong).is_err());
    }

    #[test]
    fn noise_is_added_in_the_ring() {
        let t = task(50.0);
        let x = encode_update(&[0.0; 3], &t).unwrap();
        assert!(x.iter().all(|&v| v < 1 << 20));
        let q = t.quantizer.quantizer().unwrap();
        // Noise of std 10 steps: the decoded values move by at most a few hundred steps.
        assert!(
            q.decode(&x)
                .iter()
                .all(|v| v.abs() < 1000.0 / q.scale() as f32)
        );
    }

    #[test]
    fn seeded_encoding_repeats_exactly_and_differs_by_seed() {
        let t = task(50.0);
        let d = [0.3, -0.2, 0.1];
        let a = danger::encode_update_seeded(&d, &t, [1; 32]).unwrap();
        assert_eq!(a, danger::encode_update_seeded(&d, &t, [1; 32]).unwrap());
        assert_ne!(a, danger::encode_update_seeded(&d, &t, [2; 32]).unwrap());
        // The noise is still there: the same update decodes near, not at, its value.
        let q = t.quantizer.quantizer().unwrap();
        let back = q.decode(&a);
        assert!((back[0] - 0.3).abs() < 1000.0 / q.scale() as f32);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            give_up_after: Duration::from_secs(5),
        };
        assert!(p.delay(0) < Duration::from_millis(150));
        assert!(p.delay(0) >= Duration::from_millis(50));
        assert!(p.delay(10) <= Duration::from_millis(1500));
        assert!(p.delay(10) >= Duration::from_millis(500));
    }
}
