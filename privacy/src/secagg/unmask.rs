//! The server's last step: the threshold check that creates the [`ThresholdMet`] witness, then
//! reconstruction of the secrets and removal of the masks, both spread across the cores.
//!
//! Removal splits the sum into one contiguous range per thread; each thread seeks every
//! keystream to its range, so the work is shared without any per-thread copy of the vector.

use std::num::NonZeroUsize;
use std::thread;

use zeroize::Zeroizing;

use super::crypto::{self, SecretKey, SessionId};
use super::graph::Graph;
use super::mask::{self, Lane, MaskKind, Sign};
use super::shamir::{self, Share};
use super::{AbortReason, AdvertiseKeys, PeerMisbehaved, RoundConfig, SecAggError};

/// Proof that every secret the server must reconstruct has at least `t` shares. Only
/// [`check_threshold`] creates one, and unmasking takes it by value, so unmasking without the
/// check does not compile.
#[derive(Debug)]
pub struct ThresholdMet {
    _private: (),
}

/// Creates the witness, or names the first client with fewer than `t` shares in hand.
pub(super) fn check_threshold(
    graph: &Graph,
    needs: &[bool],
    shares: &[Vec<Share>],
    t: usize,
) -> Result<ThresholdMet, AbortReason> {
    for (u, owner_shares) in shares.iter().enumerate() {
        if needs[u] && owner_shares.len() < t {
            return Err(AbortReason::TooFewShareHolders {
                client: graph.ids()[u],
                holders: owner_shares.len(),
                threshold: t,
            });
        }
    }
    Ok(ThresholdMet { _private: () })
}

/// Everything the removal needs from the finished round.
pub(super) struct Plan<'a> {
    pub config: &'a RoundConfig,
    pub session: &'a SessionId,
    pub graph: &'a Graph,
    pub directory: &'a [AdvertiseKeys],
    pub shared: &'a [bool],
    pub submitted: &'a [bool],
    pub shares: &'a [Vec<Share>],
}

/// One keystream to subtract (or add) over the whole sum.
struct MaskJob {
    seed: Zeroizing<[u8; 32]>,
    kind: MaskKind,
    sign: Sign,
}

/// Lanes per tile of the sum during removal (128 KiB of `u32`).
const TILE_LANES: usize = 32 * 1024;

fn threads() -> usize {
    thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// The masks owed by client `u`: its self mask if it survived, else the pairwise masks that its
/// surviving neighbours added with it.
fn jobs_for(plan: &Plan<'_>, u: usize) -> Result<Vec<MaskJob>, SecAggError> {
    let t = plan.config.threshold;
    let owner = plan.graph.ids()[u];
    let chosen: Vec<&Share> = plan.shares[u].iter().take(t).collect();
    let secret = Zeroizing::new(
        shamir::reconstruct_secret(&chosen)
            .map_err(|_| PeerMisbehaved::ReconstructionMismatch { client: owner })?,
    );
    if plan.submitted[u] {
        return Ok(vec![MaskJob {
            seed: secret,
            kind: MaskKind::SelfMask,
            sign: Sign::Sub,
        }]);
    }
    let key = SecretKey::from_bytes(*secret);
    if key.public() != plan.directory[u].mask_pk {
        return Err(PeerMisbehaved::ReconstructionMismatch { client: owner }.into());
    }
    let mut jobs = Vec::new();
    for &v in plan.graph.neighbours(u) {
        let v = v as usize;
        if !plan.submitted[v] {
            continue;
        }
        let peer = plan.graph.ids()[v];
        let shared = key
            .agree(&plan.directory[v].mask_pk)
            .ok_or(PeerMisbehaved::LowOrderKey { client: peer })?;
        // v added the mask with sign + when v < u; take it away with the opposite sign.
        let sign = if peer < owner { Sign::Sub } else { Sign::Add };
        jobs.push(MaskJob {
            seed: crypto::pairwise_seed(&shared, plan.session, owner, peer),
            kind: MaskKind::Pairwise,
            sign,
        });
    }
    Ok(jobs)
}

/// Reconstructs the secrets and removes every remaining mask from `sum`, then reduces it
/// mod `2^bits`.
pub(super) fn remove_masks<L: Lane>(
    _witness: ThresholdMet,
    plan: &Plan<'_>,
    sum: &mut [L],
) -> Result<(), SecAggError> {
    let owners: Vec<usize> = (0..plan.graph.len()).filter(|&u| plan.shared[u]).collect();
    let workers = threads().min(owners.len().max(1));
    let per_worker = owners.len().div_ceil(workers).max(1);
    let jobs: Vec<MaskJob> = thread::scope(|scope| {
        let handles: Vec<_> = owners
            .chunks(per_worker)
            .map(|chunk| {
                scope.spawn(move || -> Result<Vec<MaskJob>, SecAggError> {
                    let mut out = Vec::new();
                    for &u in chunk {
                        out.extend(jobs_for(plan, u)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let part = h
                .join()
                .map_err(|_| SecAggError::InvalidConfig("an unmasking thread panicked".into()))?;
            all.extend(part?);
        }
        Ok::<_, SecAggError>(all)
    })?;

    let prg = plan.config.mask_prg;
    let workers = threads().min(sum.len().max(1));
    let span = sum.len().div_ceil(workers).max(1);
    thread::scope(|scope| {
        for (i, range) in sum.chunks_mut(span).enumerate() {
            let jobs = &jobs;
            scope.spawn(move || {
                // Tiles small enough to stay in L2 while every keystream passes over them.
                for (j, tile) in range.chunks_mut(TILE_LANES).enumerate() {
                    let offset = i * span + j * TILE_LANES;
                    for job in jobs {
                        mask::apply_mask(&job.seed, prg, job.kind, job.sign, offset, tile);
                    }
                }
            });
        }
    });
    mask::reduce_all(sum, plan.config.bits);
    Ok(())
}
