//! JSON schemas of the wire types for the server's OpenAPI document, derived from the same
//! types the server and the client (de)serialise, so the document cannot promise a shape the
//! code does not accept.
//!
//! The newtypes parsed at the boundary ([`FederationId`], [`ClientId`], [`RoundId`],
//! [`Epsilon`]) get their rules spelled out (pattern, bounds): a schema-driven fuzzer reads
//! them to tell a valid request from an invalid one, and without them it reported valid
//! requests as rejected.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::ids::MAX_NAME_LEN;
use crate::{ClientId, Epsilon, FederationId, RoundId};

/// What [`FederationId::parse`] and [`ClientId::parse`] accept.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";

/// The largest integer every id and counter fits (storage is signed 64-bit).
pub const MAX_ID: u64 = i64::MAX as u64;

fn name_schema(what: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .pattern(Some(NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .description(Some(format!(
            "{what}: 1 to {MAX_NAME_LEN} characters from a-z, 0-9, '-' and '_', starting with a letter or digit"
        )))
        .into()
}

impl PartialSchema for FederationId {
    fn schema() -> RefOr<Schema> {
        name_schema("The name of a federation")
    }
}

impl ToSchema for FederationId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("FederationId")
    }
}

impl PartialSchema for ClientId {
    fn schema() -> RefOr<Schema> {
        name_schema("The name of a client (its certificate's common name)")
    }
}

impl ToSchema for ClientId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ClientId")
    }
}

/// A round number as a path or JSON integer: 1 ..= 2^63 − 1.
pub fn round_number_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Integer))
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(1))
        .maximum(Some(MAX_ID as f64))
        .description(Some("A round of the federation, numbered from 1"))
        .into()
}

impl PartialSchema for RoundId {
    fn schema() -> RefOr<Schema> {
        round_number_schema()
    }
}

impl ToSchema for RoundId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RoundId")
    }
}

impl PartialSchema for Epsilon {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Number))
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Double,
            )))
            .minimum(Some(0))
            .description(Some("A privacy-loss amount epsilon: finite and >= 0"))
            .into()
    }
}

impl ToSchema for Epsilon {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Epsilon")
    }
}

/// The shape of `cohort_privacy::EpsDelta` as the API sends it (what was spent may have δ = 0).
#[derive(Debug, ToSchema)]
#[schema(as = EpsDelta)]
#[allow(dead_code)]
pub struct EpsDeltaSchema {
    /// ε, finite and ≥ 0.
    #[schema(minimum = 0)]
    epsilon: f64,
    /// δ in [0, 1).
    #[schema(minimum = 0, exclusive_maximum = 1)]
    delta: f64,
}

/// A privacy budget as the API takes it (invitations, federation defaults): the server
/// refuses δ = 0 (DP-SGD's guarantees need δ > 0) and ε above 10⁶ (it protects nobody).
#[derive(Debug, ToSchema)]
#[schema(as = Budget)]
#[allow(dead_code)]
pub struct BudgetSchema {
    /// ε, at most 10⁶.
    #[schema(minimum = 0, maximum = 1_000_000)]
    epsilon: f64,
    /// δ in (0, 1).
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    delta: f64,
}
