//! SecAgg+ messages as they travel over HTTPS (API version 1).
//!
//! The pure state machines in `cohort_privacy::secagg` use fixed-size byte arrays and carry
//! the sender's id in every message. On the wire the sender is *never* taken from the body:
//! the server knows it from the client certificate, so the upload types here have no `from`
//! field, and the conversions take the sender as an argument. Keys and ciphertexts are
//! standard base64; Shamir shares are their evaluation point and limbs as JSON integers.
//! Masked inputs do not appear here: they travel as u32 vector frames ([`crate::frame`]).
//!
//! Every stage answers a poll with a [`StagePoll`]: the stage's output once the server has
//! closed the stage, "wait" while it is open, or "aborted" with the round's reason.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cohort_privacy::quantize::{QuantizeError, Quantizer, QuantizerConfig};
use cohort_privacy::secagg::shamir::{LIMBS, Share};
use cohort_privacy::secagg::{
    AdvertiseKeys, ClientId, EncryptedShare, EncryptedShares, KeyDirectory, MaskPrg, RoundConfig,
    RoutedShares, UnmaskRequest, UnmaskResponse,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A wire message that does not decode into a protocol message (bad base64, wrong key size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(field: &str, s: &str) -> Result<Vec<u8>, WireError> {
    STANDARD
        .decode(s)
        .map_err(|e| WireError(format!("{field} is not standard base64: {e}")))
}

fn key32(field: &str, s: &str) -> Result<[u8; 32], WireError> {
    let bytes = unb64(field, s)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        WireError(format!(
            "{field} must be 32 bytes (an X25519 public key), got {}",
            bytes.len()
        ))
    })
}

/// The quantiser every participant of a round uses, fixed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuantizerSpec {
    /// Most clients whose inputs are summed (fixes the ring width).
    pub clients: u32,
    /// L2 clip of each update (the federation's `update_clip`).
    pub clip: f32,
    /// The clip maps to `2^precision_bits` quantisation steps.
    pub precision_bits: u32,
    /// Bound on the summed integer noise, in quantisation steps.
    pub noise_headroom: u64,
}

impl QuantizerSpec {
    /// The quantiser this spec describes.
    pub fn quantizer(&self) -> Result<Quantizer, QuantizeError> {
        Quantizer::new(QuantizerConfig {
            clients: self.clients as usize,
            clip: self.clip,
            precision_bits: self.precision_bits,
            noise_headroom: self.noise_headroom,
        })
    }
}

/// How one participant takes part in a round's secure aggregation (part of its task).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecAggTask {
    /// This client's SecAgg id in the round (its Shamir point is `id + 1`).
    pub client_index: u32,
    /// How many clients were sampled.
    pub participants: u32,
    /// Coordinates of every input (the model's parameter count).
    pub dimension: u64,
    /// Inputs and the sum live in `Z_{2^bits}` (at most 32: u32 lanes).
    pub bits: u32,
    /// Degree `k` of the communication graph.
    pub neighbours: u32,
    /// Shamir threshold `t`.
    pub threshold: u32,
    /// How to quantise the clipped update.
    pub quantizer: QuantizerSpec,
    /// μ of the symmetric Skellam noise each client adds to its quantised update (variance
    /// 2μ, in quantisation steps); 0 when the federation claims no client-level DP.
    pub skellam_mu: f64,
}

impl SecAggTask {
    /// The pure state machine's parameters for `round`.
    pub fn round_config(&self, round: u64) -> Result<RoundConfig, WireError> {
        let dimension = usize::try_from(self.dimension)
            .map_err(|_| WireError(format!("dimension {} is too large", self.dimension)))?;
        Ok(RoundConfig {
            round,
            dimension,
            bits: self.bits,
            neighbours: self.neighbours as usize,
            threshold: self.threshold as usize,
            mask_prg: MaskPrg::default(),
        })
    }
}

/// `POST .../secagg/keys`: the client's two public keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicKeys {
    /// X25519 key for encrypting shares to this client (base64, 32 bytes).
    #[schema(pattern = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")]
    pub cipher_pk: String,
    /// X25519 key for agreeing pairwise mask seeds (base64, 32 bytes).
    #[schema(pattern = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")]
    pub mask_pk: String,
}

impl PublicKeys {
    /// The wire form of a client's advertisement.
    pub fn from_message(m: &AdvertiseKeys) -> Self {
        Self {
            cipher_pk: b64(&m.cipher_pk),
            mask_pk: b64(&m.mask_pk),
        }
    }

    /// The advertisement of `client` (the id comes from its certificate, not the body).
    pub fn into_message(self, client: ClientId) -> Result<AdvertiseKeys, WireError> {
        Ok(AdvertiseKeys {
            client,
            cipher_pk: key32("cipher_pk", &self.cipher_pk)?,
            mask_pk: key32("mask_pk", &self.mask_pk)?,
        })
    }
}

/// One entry of the key directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DirectoryEntry {
    /// The client's SecAgg id.
    pub client: ClientId,
    /// Its cipher key (base64).
    pub cipher_pk: String,
    /// Its mask key (base64).
    pub mask_pk: String,
}

/// `GET .../secagg/keys` once stage 1 closed: every key advertised in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Directory {
    /// The round.
    pub round: u64,
    /// Sorted by client id.
    pub entries: Vec<DirectoryEntry>,
}

impl Directory {
    /// The wire form of the server's directory.
    pub fn from_message(d: &KeyDirectory) -> Self {
        Self {
            round: d.round,
            entries: d
                .entries
                .iter()
                .map(|e| DirectoryEntry {
                    client: e.client,
                    cipher_pk: b64(&e.cipher_pk),
                    mask_pk: b64(&e.mask_pk),
                })
                .collect(),
        }
    }

    /// The directory for the client's state machine.
    pub fn into_message(self) -> Result<KeyDirectory, WireError> {
        let entries = self
            .entries
            .into_iter()
            .map(|e| {
                Ok(AdvertiseKeys {
                    client: e.client,
                    cipher_pk: key32("cipher_pk", &e.cipher_pk)?,
                    mask_pk: key32("mask_pk", &e.mask_pk)?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(KeyDirectory {
            round: self.round,
            entries,
        })
    }
}

/// One encrypted share pair addressed to a neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutgoingShare {
    /// The recipient's SecAgg id.
    pub to: ClientId,
    /// ChaCha20-Poly1305 ciphertext (base64).
    #[schema(
        pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AQgw]==|[A-Za-z0-9+/]{3}[AEIMQUYcgkosw048]=)?$"
    )]
    pub ciphertext: String,
}

/// `POST .../secagg/shares`: one ciphertext per neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SharesUpload {
    /// The ciphertexts.
    pub shares: Vec<OutgoingShare>,
}

impl SharesUpload {
    /// The wire form of a client's shares.
    pub fn from_message(m: &EncryptedShares) -> Self {
        Self {
            shares: m
                .shares
                .iter()
                .map(|s| OutgoingShare {
                    to: s.to,
                    ciphertext: b64(&s.ciphertext),
                })
                .collect(),
        }
    }

    /// The shares sent by `from` (from its certificate).
    pub fn into_message(self, from: ClientId) -> Result<EncryptedShares, WireError> {
        let shares = self
            .shares
            .into_iter()
            .map(|s| {
                Ok(EncryptedShare {
                    from,
                    to: s.to,
                    ciphertext: unb64("ciphertext", &s.ciphertext)?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(EncryptedShares { from, shares })
    }
}

/// One ciphertext routed to its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IncomingShare {
    /// The sender's SecAgg id.
    pub from: ClientId,
    /// The ciphertext (base64).
    pub ciphertext: String,
}

/// `GET .../secagg/shares` once stage 2 closed: the ciphertexts addressed to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Routed {
    /// The ciphertexts.
    pub shares: Vec<IncomingShare>,
}

impl Routed {
    /// The wire form of the server's routing for one client.
    pub fn from_message(r: &RoutedShares) -> Self {
        Self {
            shares: r
                .shares
                .iter()
                .map(|s| IncomingShare {
                    from: s.from,
                    ciphertext: b64(&s.ciphertext),
                })
                .collect(),
        }
    }

    /// The routed shares for recipient `to`.
    pub fn into_message(self, to: ClientId) -> Result<RoutedShares, WireError> {
        let shares = self
            .shares
            .into_iter()
            .map(|s| {
                Ok(EncryptedShare {
                    from: s.from,
                    to,
                    ciphertext: unb64("ciphertext", &s.ciphertext)?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(RoutedShares { to, shares })
    }
}

/// `GET .../secagg/unmask` once stage 3 closed: whose masks to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnmaskList {
    /// Clients whose masked input was summed.
    pub survivors: Vec<ClientId>,
    /// Clients that shared keys but sent no input.
    pub dropped: Vec<ClientId>,
}

impl UnmaskList {
    /// The wire form of the request.
    pub fn from_message(r: &UnmaskRequest) -> Self {
        Self {
            survivors: r.survivors.clone(),
            dropped: r.dropped.clone(),
        }
    }

    /// The request for the client's state machine.
    pub fn into_message(self) -> UnmaskRequest {
        UnmaskRequest {
            survivors: self.survivors,
            dropped: self.dropped,
        }
    }
}

/// One Shamir share of a neighbour's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareValue {
    /// Whose secret this is a share of.
    pub owner: ClientId,
    /// The evaluation point (holder id + 1).
    pub x: u64,
    /// The polynomial's values, one per limb.
    // The schema spells LIMBS out (attributes take literals); the assertion below keeps it true.
    #[schema(value_type = Vec<u64>, min_items = 5, max_items = 5)]
    pub y: [u64; LIMBS],
}

const _: () = assert!(LIMBS == 5, "update ShareValue::y's schema");

/// `POST .../secagg/unmask`: the shares the server asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnmaskShares {
    /// Shares of survivors' self-mask seeds.
    pub self_mask_shares: Vec<ShareValue>,
    /// Shares of dropped clients' mask keys.
    pub mask_key_shares: Vec<ShareValue>,
}

fn share_values(shares: &[(ClientId, Share)]) -> Vec<ShareValue> {
    shares
        .iter()
        .map(|(owner, s)| ShareValue {
            owner: *owner,
            x: s.x,
            y: s.y,
        })
        .collect()
}

fn shares_of(values: Vec<ShareValue>) -> Vec<(ClientId, Share)> {
    values
        .into_iter()
        .map(|v| (v.owner, Share { x: v.x, y: v.y }))
        .collect()
}

impl UnmaskShares {
    /// The wire form of a client's response.
    pub fn from_message(r: &UnmaskResponse) -> Self {
        Self {
            self_mask_shares: share_values(&r.self_mask_shares),
            mask_key_shares: share_values(&r.mask_key_shares),
        }
    }

    /// The response of holder `from` (from its certificate).
    pub fn into_message(self, from: ClientId) -> UnmaskResponse {
        UnmaskResponse {
            from,
            self_mask_shares: shares_of(self.self_mask_shares),
            mask_key_shares: shares_of(self.mask_key_shares),
        }
    }
}

/// The answer to a stage poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StagePoll<T> {
    /// The stage is still open: ask again after this many milliseconds.
    Wait {
        /// Milliseconds until the next poll.
        retry_after_ms: u64,
    },
    /// The stage closed; this is its output for the caller.
    Ready {
        /// The output.
        value: T,
    },
    /// The round ended without a sum; nothing more is wanted from the client.
    Aborted {
        /// Why.
        reason: String,
    },
}

/// The answer to an accepted SecAgg upload. Re-sending the identical message gets the same
/// receipt (safe retries); a different message for the same stage gets 409.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StageReceipt {
    /// The round.
    pub round: u64,
    /// The stage the message was accepted into (`advertise_keys`, `share_keys`,
    /// `masked_input`, `unmask`).
    pub stage: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_lengths_are_refused() {
        let m = AdvertiseKeys {
            client: 3,
            cipher_pk: [1; 32],
            mask_pk: [2; 32],
        };
        let w = PublicKeys::from_message(&m);
        let json = serde_json::to_string(&w).unwrap();
        let back: PublicKeys = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_message(3).unwrap(), m);
        let short = PublicKeys {
            cipher_pk: b64(&[1; 31]),
            mask_pk: b64(&[2; 32]),
        };
        assert!(short.into_message(3).unwrap_err().0.contains("32 bytes"));
        let junk = PublicKeys {
            cipher_pk: "!!".into(),
            mask_pk: b64(&[2; 32]),
        };
        assert!(junk.into_message(3).unwrap_err().0.contains("base64"));
    }

    #[test]
    fn shares_take_the_sender_from_the_caller() {
        let m = EncryptedShares {
            from: 9,
            shares: vec![EncryptedShare {
                from: 9,
                to: 4,
                ciphertext: vec![7, 8, 9],
            }],
        };
        let w = SharesUpload::from_message(&m);
        assert_eq!(w.clone().into_message(9).unwrap(), m);
        let spoofed = w.into_message(2).unwrap();
        assert!(spoofed.shares.iter().all(|s| s.from == 2));
    }

    #[test]
    fn unmask_shares_round_trip() {
        let r = UnmaskResponse {
            from: 1,
            self_mask_shares: vec![(
                2,
                Share {
                    x: 2,
                    y: [1, 2, 3, 4, u64::MAX],
                },
            )],
            mask_key_shares: vec![],
        };
        let json = serde_json::to_string(&UnmaskShares::from_message(&r)).unwrap();
        let back: UnmaskShares = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_message(1), r);
    }

    #[test]
    fn stage_poll_is_tagged() {
        let w: StagePoll<UnmaskList> = StagePoll::Wait {
            retry_after_ms: 100,
        };
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"kind":"wait","retry_after_ms":100}"#
        );
        let r = StagePoll::Ready {
            value: UnmaskList {
                survivors: vec![1],
                dropped: vec![],
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            serde_json::from_str::<StagePoll<UnmaskList>>(&s).unwrap(),
            r
        );
    }
}
