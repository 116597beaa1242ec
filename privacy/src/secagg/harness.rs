//! Runs whole rounds in memory: `n` clients and the server, messages passed by value, dropouts
//! injected at any stage. Used by the tests, the simulator and `cohort bench secagg`.
//!
//! Inputs are asked for lazily, one client at a time, just before that client masks, and the
//! masked vector goes straight into the server's running sum; so a round over `n` clients of
//! dimension `d` holds O(d) vectors, not O(n·d).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::{ChaCha20Rng, SysRng};

use super::client::{AwaitingDirectory, Step};
use super::mask::{self, Lane};
use super::server::{Aggregate, Broadcast, ServerSession};
use super::{AbortReason, ApiMisuse, ClientId, ClientMessage, RoundConfig, SecAggError};

/// A stage of the round, for dropout injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Before advertising keys.
    AdvertiseKeys,
    /// Before sending shares.
    ShareKeys,
    /// Before sending the masked input.
    MaskedInput,
    /// Before answering the unmask request.
    Unmask,
}

/// Which clients go silent before which stage (and stay silent afterwards).
#[derive(Debug, Clone, Default)]
pub struct Dropouts {
    drops: Vec<(ClientId, Stage)>,
}

impl Dropouts {
    /// Nobody drops out.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds `client` dropping out before `stage`.
    pub fn with(mut self, client: ClientId, stage: Stage) -> Self {
        self.drops.push((client, stage));
        self
    }

    /// Drops `round(fraction · n)` clients, chosen uniformly from `0..n` with the given seed,
    /// all before `stage`.
    pub fn random(n: u32, fraction: f64, stage: Stage, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut ids: Vec<ClientId> = (0..n).collect();
        let count = ((f64::from(n) * fraction).round() as usize).min(ids.len());
        for i in 0..count {
            let j = rand::RngExt::random_range(&mut rng, i..ids.len());
            ids.swap(i, j);
        }
        Dropouts {
            drops: ids[..count].iter().map(|&c| (c, stage)).collect(),
        }
    }

    pub(crate) fn active(&self, client: ClientId, stage: Stage) -> bool {
        !self.drops.iter().any(|&(c, s)| c == client && s <= stage)
    }
}

/// Wall-clock times of one round.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Slowest client's masking stage (authenticating shares and expanding every mask).
    pub client_mask_max: Duration,
    /// Mean over clients of the masking stage.
    pub client_mask_mean: Duration,
    /// Slowest client's total compute over all four stages.
    pub client_total_max: Duration,
    /// Server time to check the threshold, reconstruct the secrets and remove the masks.
    pub server_unmask: Duration,
    /// Server time spent adding masked inputs into the running sum.
    pub server_sum: Duration,
}

/// What a round produced.
#[derive(Debug)]
pub struct Outcome<L> {
    /// The sum, or why the round aborted.
    pub result: Result<Aggregate<L>, AbortReason>,
    /// The plain sum mod `2^bits` of the inputs the server accepted, for comparison.
    pub expected: Vec<L>,
    /// Clients that aborted on their own, with the reason.
    pub client_aborts: Vec<(ClientId, AbortReason)>,
    /// Timings.
    pub timings: Timings,
}

impl<L: Lane> Outcome<L> {
    /// Whether the round finished and its sum equals the plain sum of the accepted inputs.
    pub fn exact(&self) -> bool {
        matches!(&self.result, Ok(a) if a.sum == self.expected)
    }
}

/// Runs one round over clients `0..n` with `input(id)` as each client's quantised vector.
pub fn run_round<L: Lane>(
    config: &RoundConfig,
    n: u32,
    dropouts: &Dropouts,
    mut input: impl FnMut(ClientId) -> Vec<L>,
) -> Result<Outcome<L>, SecAggError> {
    let mut rng =
        ChaCha20Rng::try_from_rng(&mut SysRng).map_err(|_| ApiMisuse::RandomnessUnavailable)?;
    let mut server = ServerSession::<L>::new(*config)?;
    let mut client_time = vec![Duration::ZERO; n as usize];
    let mut client_aborts = Vec::new();
    let mut timings = Timings::default();
    let aborted = |s: ServerSession<L>| match s {
        ServerSession::Aborted(reason) => Some(reason),
        _ => None,
    };
    let finish = |reason, timings, client_aborts| Outcome {
        result: Err(reason),
        expected: vec![L::default(); config.dimension],
        client_aborts,
        timings,
    };

    // Stage 1.
    let mut stage1 = Vec::new();
    for id in (0..n).filter(|&id| dropouts.active(id, Stage::AdvertiseKeys)) {
        let started = Instant::now();
        let (client, keys) = AwaitingDirectory::start_with_rng::<L>(id, *config, &mut rng)?;
        client_time[id as usize] += started.elapsed();
        server = server.handle(ClientMessage::AdvertiseKeys(keys))?;
        stage1.push((id, client));
    }
    let (next, out) = server.close()?;
    let Some(Broadcast::KeyDirectory(directory)) = out else {
        return Ok(finish(
            aborted(next).ok_or(ApiMisuse::WrongState("no directory"))?,
            timings,
            client_aborts,
        ));
    };
    server = next;

    // Stage 2.
    let mut stage2 = Vec::new();
    for (id, client) in stage1
        .into_iter()
        .filter(|(id, _)| dropouts.active(*id, Stage::ShareKeys))
    {
        let started = Instant::now();
        let step = client.handle(directory.clone())?;
        client_time[id as usize] += started.elapsed();
        match step {
            Step::Next(client, shares) => {
                server = server.handle(ClientMessage::EncryptedShares(shares))?;
                stage2.push((id, client));
            }
            Step::Abort(reason) => client_aborts.push((id, reason)),
        }
    }
    let (next, out) = server.close()?;
    let Some(Broadcast::RoutedShares(routed)) = out else {
        return Ok(finish(
            aborted(next).ok_or(ApiMisuse::WrongState("no routing"))?,
            timings,
            client_aborts,
        ));
    };
    server = next;

    // Stage 3.
    let mut expected = vec![L::default(); config.dimension];
    let mut stage3 = Vec::new();
    let mut mask_times = Vec::new();
    let mut routed = routed.into_iter().peekable();
    for (id, client) in stage2 {
        while routed.peek().is_some_and(|r| r.to < id) {
            routed.next();
        }
        let Some(mine) = routed.next_if(|r| r.to == id) else {
            continue;
        };
        if !dropouts.active(id, Stage::MaskedInput) {
            continue;
        }
        let x = input(id);
        let plain = x.clone();
        let started = Instant::now();
        let step = client.handle(mine, x)?;
        let took = started.elapsed();
        client_time[id as usize] += took;
        match step {
            Step::Next(client, masked) => {
                mask_times.push(took);
                let started = Instant::now();
                server = server.handle(ClientMessage::MaskedInput(masked))?;
                timings.server_sum += started.elapsed();
                mask::add_into(&mut expected, &plain);
                mask::reduce_all(&mut expected, config.bits);
                stage3.push((id, client));
            }
            Step::Abort(reason) => client_aborts.push((id, reason)),
        }
    }
    timings.client_mask_max = mask_times.iter().copied().max().unwrap_or_default();
    if !mask_times.is_empty() {
        timings.client_mask_mean = mask_times.iter().sum::<Duration>() / mask_times.len() as u32;
    }
    let (next, out) = server.close()?;
    let Some(Broadcast::UnmaskRequest(request)) = out else {
        timings.client_total_max = client_time.iter().copied().max().unwrap_or_default();
        return Ok(finish(
            aborted(next).ok_or(ApiMisuse::WrongState("no unmask request"))?,
            timings,
            client_aborts,
        ));
    };
    server = next;

    // Stage 4.
    let survivors: BTreeSet<ClientId> = request.survivors.iter().copied().collect();
    for (id, client) in stage3 {
        if !dropouts.active(id, Stage::Unmask) || !survivors.contains(&id) {
            continue;
        }
        let started = Instant::now();
        let response = client.handle(request.clone())?;
        client_time[id as usize] += started.elapsed();
        server = server.handle(ClientMessage::UnmaskResponse(response))?;
    }
    let started = Instant::now();
    let (done, _) = server.close()?;
    timings.server_unmask = started.elapsed();
    timings.client_total_max = client_time.iter().copied().max().unwrap_or_default();
    let result = match done {
        ServerSession::Done(aggregate) => Ok(aggregate),
        ServerSession::Aborted(reason) => Err(reason),
        _ => return Err(ApiMisuse::WrongState("the round did not finish").into()),
    };
    Ok(Outcome {
        result,
        expected,
        client_aborts,
        timings,
    })
}
