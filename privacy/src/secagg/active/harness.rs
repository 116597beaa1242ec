//! Whole active-mode rounds in memory, as [`crate::secagg::harness`] does for the plain mode:
//! honest clients and an honest server, dropouts injected per stage (a client dropping before
//! [`Stage::Unmask`] neither signs the survivor set nor answers).

use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::{ChaCha20Rng, SysRng};

use super::super::client::Step;
use super::super::harness::{Dropouts, Stage};
use super::super::mask::{self, Lane};
use super::client::SignedAwaitingDirectory;
use super::{ActiveBroadcast, ActiveClientMessage, ActiveServerSession, Identities, IdentityKey};
use crate::secagg::{AbortReason, ApiMisuse, ClientId, RoundConfig, SecAggError};

pub use super::super::harness::Outcome;

fn expect<T>(found: Option<T>, stage: &'static str) -> Result<T, SecAggError> {
    found.ok_or_else(|| ApiMisuse::WrongState(stage).into())
}

/// Runs one active-mode round over clients `0..keys.len()`, client `i` holding `keys[i]`
/// (registered in `identities`), with `input(id)` as each client's quantised vector.
pub fn run_round<L: Lane>(
    config: &RoundConfig,
    keys: Vec<IdentityKey>,
    identities: &Arc<Identities>,
    dropouts: &Dropouts,
    mut input: impl FnMut(ClientId) -> Vec<L>,
) -> Result<Outcome<L>, SecAggError> {
    let mut rng =
        ChaCha20Rng::try_from_rng(&mut SysRng).map_err(|_| ApiMisuse::RandomnessUnavailable)?;
    let mut server = ActiveServerSession::<L>::new(*config, identities.clone())?;
    let mut client_aborts: Vec<(ClientId, AbortReason)> = Vec::new();
    let aborted = |server: ActiveServerSession<L>, client_aborts| {
        let reason = match server {
            ActiveServerSession::Aborted(reason) => reason,
            _ => return Err(SecAggError::from(ApiMisuse::WrongState("no broadcast"))),
        };
        Ok(Outcome {
            result: Err(reason),
            expected: vec![L::default(); config.dimension],
            client_aborts,
            timings: Default::default(),
        })
    };

    let mut stage1 = Vec::new();
    for (id, key) in (0..).zip(keys) {
        if !dropouts.active(id, Stage::AdvertiseKeys) {
            continue;
        }
        let (client, signed) = SignedAwaitingDirectory::start_with_rng::<L>(
            id,
            *config,
            Arc::new(key),
            identities.clone(),
            &mut rng,
        )?;
        server = server.handle(ActiveClientMessage::SignedKeys(signed))?;
        stage1.push((id, client));
    }
    let (next, out) = server.close()?;
    let Some(ActiveBroadcast::KeyDirectory(directory)) = out else {
        return aborted(next, client_aborts);
    };
    server = next;

    let mut stage2 = Vec::new();
    for (id, client) in stage1 {
        if !dropouts.active(id, Stage::ShareKeys) {
            continue;
        }
        match client.handle(directory.clone())? {
            Step::Next(client, shares) => {
                server = server.handle(ActiveClientMessage::EncryptedShares(shares))?;
                stage2.push((id, client));
            }
            Step::Abort(reason) => client_aborts.push((id, reason)),
        }
    }
    let (next, out) = server.close()?;
    let Some(ActiveBroadcast::RoutedShares(routed)) = out else {
        return aborted(next, client_aborts);
    };
    server = next;

    let mut expected = vec![L::default(); config.dimension];
    let mut stage3 = Vec::new();
    for (id, client) in stage2 {
        let Some(mine) = routed.iter().find(|r| r.to == id) else {
            continue;
        };
        if !dropouts.active(id, Stage::MaskedInput) {
            continue;
        }
        let x = input(id);
        let plain = x.clone();
        match client.handle(mine.clone(), x)? {
            Step::Next(client, masked) => {
                server = server.handle(ActiveClientMessage::MaskedInput(masked))?;
                mask::add_into(&mut expected, &plain);
                mask::reduce_all(&mut expected, config.bits);
                stage3.push((id, client));
            }
            Step::Abort(reason) => client_aborts.push((id, reason)),
        }
    }
    let (next, out) = server.close()?;
    let Some(ActiveBroadcast::UnmaskRequest(request)) = out else {
        return aborted(next, client_aborts);
    };
    server = next;

    let mut signed = Vec::new();
    for (id, client) in stage3 {
        if !dropouts.active(id, Stage::Unmask) || !request.survivors.contains(&id) {
            continue;
        }
        let (client, signature) = client.handle(request.clone())?;
        server = server.handle(ActiveClientMessage::SurvivorSignature(signature))?;
        signed.push((id, client));
    }
    let (next, out) = server.close()?;
    let signatures = expect(
        match out {
            Some(ActiveBroadcast::SurvivorSignatures(s)) => Some(s),
            _ => None,
        },
        "no survivor signatures",
    )?;
    server = next;
    for (id, client) in signed {
        match client.handle(signatures.clone())? {
            Step::Next((), response) => {
                server = server.handle(ActiveClientMessage::UnmaskResponse(response))?;
            }
            Step::Abort(reason) => client_aborts.push((id, reason)),
        }
    }
    let (done, _) = server.close()?;
    let result = match done {
        ActiveServerSession::Done(aggregate) => Ok(aggregate),
        ActiveServerSession::Aborted(reason) => Err(reason),
        _ => return Err(ApiMisuse::WrongState("the round did not finish").into()),
    };
    Ok(Outcome {
        result,
        expected,
        client_aborts,
        timings: Default::default(),
    })
}
