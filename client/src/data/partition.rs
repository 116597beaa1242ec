//! Dealing one data set out to the clients of a simulated federation.
//!
//! Each partitioner takes plain labels (`&[i64]`, see [`Dataset::label_vec`](super::Dataset::label_vec))
//! or a site column and returns a [`Partition`]: one list of example indices per client. Every
//! example goes to exactly one client, each client's list is in ascending order, and the result
//! depends only on the inputs and the seed (ChaCha8; the same on every platform). Turn a list
//! into a client's data with [`Dataset::select`](super::Dataset::select).
//!
//! | partitioner | models | string form |
//! |---|---|---|
//! | [`iid`] | clients drawn from one population | `iid` |
//! | [`dirichlet`] | label skew: client `k` gets a `Dir(α)` share of each class | `dirichlet:ALPHA[:MIN_SIZE]` |
//! | [`shards`] | pathological skew: each client holds at most `s` labels | `shards:S` |
//! | [`by_column`] | natural sites, such as a hospital id column | `column` |
//! | [`quantity_skew`] | IID labels but very unequal client sizes | `quantity:lognormal:SIGMA`, `quantity:power:EXPONENT` |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use rand::RngExt;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, StandardNormal};

use super::split::{permutation, seeded_rng};

/// Why a partition could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// The parameters are out of range or inconsistent with the data.
    #[error("invalid partition: {0}")]
    InvalidArgument(String),
    /// No partition satisfying the constraints was found; the message says what to relax.
    #[error("partition not found: {0}")]
    Infeasible(String),
}

fn invalid(reason: impl Into<String>) -> PartitionError {
    PartitionError::InvalidArgument(reason.into())
}

/// Index lists, one per client. Invariant (from every partitioner here): the lists are disjoint,
/// each is ascending, and together they cover `0..n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// `clients[k]` holds the indices of client `k`'s examples.
    pub clients: Vec<Vec<usize>>,
    /// For [`by_column`], the column value of each client (`keys[k]` for client `k`); empty
    /// for the other partitioners.
    pub keys: Vec<String>,
}

impl Partition {
    fn from_lists(mut clients: Vec<Vec<usize>>) -> Self {
        for list in &mut clients {
            list.sort_unstable();
        }
        Self {
            clients,
            keys: Vec::new(),
        }
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether there are no clients.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Number of examples of each client.
    pub fn sizes(&self) -> Vec<usize> {
        self.clients.iter().map(Vec::len).collect()
    }

    /// Whether every index in `0..n` is assigned to exactly one client and nothing else is.
    pub fn is_exact_cover(&self, n: usize) -> bool {
        let mut seen = vec![false; n];
        for &i in self.clients.iter().flatten() {
            match seen.get_mut(i) {
                Some(slot) if !*slot => *slot = true,
                _ => return false,
            }
        }
        seen.into_iter().all(|s| s)
    }

    /// `counts[k][c]`: how many examples of class `c` client `k` holds (labels outside
    /// `0..num_classes` are not counted).
    pub fn label_counts(&self, labels: &[i64], num_classes: usize) -> Vec<Vec<usize>> {
        self.clients
            .iter()
            .map(|list| {
                let mut counts = vec![0; num_classes];
                for &i in list {
                    let class = labels.get(i).and_then(|&l| usize::try_from(l).ok());
                    if let Some(slot) = class.and_then(|c| counts.get_mut(c)) {
                        *slot += 1;
                    }
                }
                counts
            })
            .collect()
    }
}

fn check_clients(n: usize, clients: usize, min_size: usize) -> Result<(), PartitionError> {
    if clients == 0 {
        return Err(invalid("the number of clients must be at least 1"));
    }
    if n < clients.saturating_mul(min_size.max(1)) {
        return Err(invalid(format!(
            "{n} examples cannot give {clients} clients at least {} each; use fewer clients",
            min_size.max(1)
        )));
    }
    Ok(())
}

/// Examples shuffled with `seed` and dealt in equal contiguous blocks (sizes differ by at most
/// one): every client's label mix matches the population's up to sampling noise.
pub fn iid(n: usize, clients: usize, seed: u64) -> Result<Partition, PartitionError> {
    check_clients(n, clients, 1)?;
    let sizes = vec![1.0; clients];
    Ok(cut(&permutation(n, seed), &apportion(n, &sizes, 0)))
}

/// Cuts `order` into consecutive blocks of the given sizes (which sum to `order.len()`).
fn cut(order: &[usize], sizes: &[usize]) -> Partition {
    let mut start = 0;
    let lists = sizes
        .iter()
        .map(|&size| {
            let block = order[start..start + size].to_vec();
            start += size;
            block
        })
        .collect();
    Partition::from_lists(lists)
}

/// Splits `n` into `weights.len()` integer parts, each at least `min_size`, with the rest shared
/// in proportion to the weights by largest remainder (ties to the lower index).
fn apportion(n: usize, weights: &[f64], min_size: usize) -> Vec<usize> {
    let parts = weights.len();
    let spare = n - parts * min_size;
    let total: f64 = weights.iter().sum();
    #[allow(clippy::cast_precision_loss)]
    let quotas: Vec<f64> = weights
        .iter()
        .map(|w| {
            if total > 0.0 {
                w / total * spare as f64
            } else {
                spare as f64 / parts as f64
            }
        })
        .collect();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mut sizes: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let given: usize = sizes.iter().sum();
    let mut order: Vec<usize> = (0..parts).collect();
    #[allow(clippy::cast_precision_loss)]
    order.sort_by(|&a, &b| {
        let (ra, rb) = (quotas[a] - sizes[a] as f64, quotas[b] - sizes[b] as f64);
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    // Float rounding can make `given` overshoot by a hair; never hand out more than `spare`.
    let mut left = spare.saturating_sub(given);
    if given > spare {
        let mut excess = given - spare;
        for size in sizes.iter_mut().rev() {
            let take = excess.min(*size);
            *size -= take;
            excess -= take;
        }
    }
    for &k in order.iter().cycle() {
        if left == 0 {
            break;
        }
        sizes[k] += 1;
        left -= 1;
    }
    sizes.into_iter().map(|s| s + min_size).collect()
}

/// The indices of each class present in `labels`, in ascending label order.
fn by_class(labels: &[i64]) -> BTreeMap<i64, Vec<usize>> {
    let mut classes: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &label) in labels.iter().enumerate() {
        classes.entry(label).or_default().push(i);
    }
    classes
}

/// How many attempts [`dirichlet`] makes to meet `min_size` before giving up.
const DIRICHLET_ATTEMPTS: usize = 1000;

/// Label skew: for each class, shares `p ~ Dir(α, …, α)` over the clients, and the class's
/// (shuffled) examples cut in those proportions (Hsu et al. 2019, as in Flower's
/// `DirichletPartitioner`). Small α (0.1) gives most clients a few dominant classes; large α
/// (100) approaches IID. Draws are repeated until every client holds at least `min_size`
/// examples, up to a fixed number of attempts.
pub fn dirichlet(
    labels: &[i64],
    clients: usize,
    alpha: f64,
    min_size: usize,
    seed: u64,
) -> Result<Partition, PartitionError> {
    check_clients(labels.len(), clients, min_size)?;
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(invalid(format!("α must be a positive number, got {alpha}")));
    }
    let gamma = Gamma::new(alpha, 1.0).map_err(|e| invalid(format!("α = {alpha}: {e}")))?;
    let classes = by_class(labels);
    let mut rng = seeded_rng(seed);
    for _ in 0..DIRICHLET_ATTEMPTS {
        let mut lists = vec![Vec::new(); clients];
        for members in classes.values() {
            let mut members = members.clone();
            members.shuffle(&mut rng);
            let shares = dirichlet_shares(&gamma, clients, &mut rng);
            let sizes = apportion(members.len(), &shares, 0);
            let mut start = 0;
            for (list, size) in lists.iter_mut().zip(sizes) {
                list.extend_from_slice(&members[start..start + size]);
                start += size;
            }
        }
        if lists.iter().all(|list| list.len() >= min_size.max(1)) {
            return Ok(Partition::from_lists(lists));
        }
    }
    Err(PartitionError::Infeasible(format!(
        "{DIRICHLET_ATTEMPTS} Dirichlet draws with α = {alpha} all left a client with fewer \
         than {} examples; raise α, lower the minimum size or use fewer clients",
        min_size.max(1)
    )))
}

/// One draw of `Dir(α)` over `k` parts by normalised Gamma variates. For tiny α every variate
/// can underflow to 0; then one uniformly chosen part takes everything, the limit as α → 0.
fn dirichlet_shares(gamma: &Gamma<f64>, k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut shares: Vec<f64> = (0..k).map(|_| gamma.sample(rng)).collect();
    let total: f64 = shares.iter().sum();
    if total > 0.0 && total.is_finite() {
        for share in &mut shares {
            *share /= total;
        }
    } else {
        shares = vec![0.0; k];
        shares[rng.random_range(0..k)] = 1.0;
    }
    shares
}

/// Pathological skew: each client gets `per_client` label-pure shards, so it holds at most
/// `per_client` distinct labels.
///
/// Unlike McMahan et al.'s sort-and-cut (whose shards can straddle two labels), the
/// `clients × per_client` shards are cut within classes: every present class gets at least one
/// shard and the rest go to whichever class currently has the largest shards (D'Hondt), which
/// keeps shard sizes as equal as the class sizes allow. Shards are then shuffled and dealt.
pub fn shards(
    labels: &[i64],
    clients: usize,
    per_client: usize,
    seed: u64,
) -> Result<Partition, PartitionError> {
    check_clients(labels.len(), clients, 1)?;
    if per_client == 0 {
        return Err(invalid("each client needs at least one shard"));
    }
    let total = clients.saturating_mul(per_client);
    let classes = by_class(labels);
    if total < classes.len() {
        return Err(invalid(format!(
            "{clients} clients × {per_client} shards = {total} shards cannot cover {} labels \
             without mixing labels in a shard; use more clients or more shards per client",
            classes.len()
        )));
    }
    if total > labels.len() {
        return Err(invalid(format!(
            "{total} shards need at least {total} examples, there are {}",
            labels.len()
        )));
    }
    // D'Hondt: start each class at one shard, then give each further shard to the class whose
    // shards are currently largest (count / shards), compared exactly in integers.
    let counts: Vec<usize> = classes.values().map(Vec::len).collect();
    let mut per_class = vec![1usize; counts.len()];
    for _ in classes.len()..total {
        // Largest current shard size first, lower label on ties; only classes with room.
        let best = (0..counts.len())
            .filter(|&c| per_class[c] < counts[c])
            .max_by(|&a, &b| {
                let size_a = (counts[a] as u128) * (per_class[b] as u128);
                let size_b = (counts[b] as u128) * (per_class[a] as u128);
                size_a.cmp(&size_b).then(b.cmp(&a))
            });
        match best {
            Some(c) => per_class[c] += 1,
            None => break, // unreachable: total <= n guarantees a class with room
        }
    }
    let mut rng = seeded_rng(seed);
    let mut all_shards: Vec<Vec<usize>> = Vec::with_capacity(total);
    for (members, &pieces) in classes.values().zip(&per_class) {
        let mut members = members.clone();
        members.shuffle(&mut rng);
        let sizes = apportion(members.len(), &vec![1.0; pieces], 0);
        let mut start = 0;
        for size in sizes {
            all_shards.push(members[start..start + size].to_vec());
            start += size;
        }
    }
    all_shards.shuffle(&mut rng);
    let lists = all_shards
        .chunks(per_client)
        .map(|chunk| chunk.concat())
        .collect();
    Ok(Partition::from_lists(lists))
}

/// Natural sites: one client per distinct value of a column (a hospital id, a device), in the
/// values' sorted order, recorded in [`Partition::keys`]. No randomness is involved.
pub fn by_column<T: Ord + fmt::Display>(values: &[T]) -> Result<Partition, PartitionError> {
    if values.is_empty() {
        return Err(invalid("the column has no values"));
    }
    let mut groups: BTreeMap<&T, Vec<usize>> = BTreeMap::new();
    for (i, value) in values.iter().enumerate() {
        groups.entry(value).or_default().push(i);
    }
    let keys = groups.keys().map(|k| k.to_string()).collect();
    let clients = groups.into_values().collect();
    Ok(Partition { clients, keys })
}

/// The law of client sizes for [`quantity_skew`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeDistribution {
    /// Weights `exp(σ·Z)`, `Z` standard normal: σ = 0 is equal sizes, σ ≈ 1–2 is typical skew.
    LogNormal {
        /// σ ≥ 0.
        sigma: f64,
    },
    /// Pareto weights `U^(-1/a)`: a heavy tail of a few very large clients; smaller `a`,
    /// heavier tail (a ≈ 1–2 is typical).
    PowerLaw {
        /// The tail exponent `a > 0`.
        exponent: f64,
    },
}

/// Quantity skew: client sizes drawn from `distribution` (each at least `min_size`), examples
/// shuffled and cut into blocks of those sizes, so labels stay IID but sizes vary widely.
pub fn quantity_skew(
    n: usize,
    clients: usize,
    distribution: SizeDistribution,
    min_size: usize,
    seed: u64,
) -> Result<Partition, PartitionError> {
    let min_size = min_size.max(1);
    check_clients(n, clients, min_size)?;
    let mut rng = seeded_rng(seed);
    let weights: Vec<f64> = match distribution {
        SizeDistribution::LogNormal { sigma } if sigma.is_finite() && sigma >= 0.0 => (0..clients)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (sigma * z).exp()
            })
            .collect(),
        SizeDistribution::PowerLaw { exponent } if exponent.is_finite() && exponent > 0.0 => {
            (0..clients)
                .map(|_| {
                    // 1 - U is in (0, 1], so the power is finite.
                    let u: f64 = rng.random();
                    (1.0 - u).powf(-1.0 / exponent)
                })
                .collect()
        }
        other => return Err(invalid(format!("invalid size distribution {other:?}"))),
    };
    let weights: Vec<f64> = weights
        .into_iter()
        .map(|w| {
            if w.is_finite() {
                w
            } else {
                f64::MAX / 2.0 / clients as f64
            }
        })
        .collect();
    let order = permutation(n, rng.random());
    Ok(cut(&order, &apportion(n, &weights, min_size)))
}

/// A partitioner chosen by name, as a simulation config names it (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum Partitioner {
    /// [`iid`].
    Iid,
    /// [`dirichlet`].
    Dirichlet {
        /// Concentration α > 0.
        alpha: f64,
        /// Smallest client size accepted.
        min_size: usize,
    },
    /// [`shards`].
    Shards {
        /// Shards per client.
        per_client: usize,
    },
    /// [`by_column`] over the data set's group column.
    Column,
    /// [`quantity_skew`] with a minimum size of 1.
    Quantity(SizeDistribution),
}

impl Partitioner {
    /// Partitions a data set of `labels` (and, for [`Partitioner::Column`], its group column)
    /// among `clients` clients. For `Column` the number of clients must equal the number of
    /// distinct group values, since the data decides it.
    pub fn partition(
        &self,
        labels: &[i64],
        groups: Option<&[String]>,
        clients: usize,
        seed: u64,
    ) -> Result<Partition, PartitionError> {
        match *self {
            Self::Iid => iid(labels.len(), clients, seed),
            Self::Dirichlet { alpha, min_size } => {
                dirichlet(labels, clients, alpha, min_size, seed)
            }
            Self::Shards { per_client } => shards(labels, clients, per_client, seed),
            Self::Column => {
                let groups = groups.ok_or_else(|| {
                    invalid(
                        "`column` needs a group column: add `group=COLUMN` to the csv data spec",
                    )
                })?;
                if groups.len() != labels.len() {
                    return Err(invalid(format!(
                        "{} group values for {} examples",
                        groups.len(),
                        labels.len()
                    )));
                }
                let partition = by_column(groups)?;
                if partition.len() != clients {
                    return Err(invalid(format!(
                        "the group column has {} distinct values ({}), so the federation has \
                         that many clients, not {clients}",
                        partition.len(),
                        partition.keys.join(", ")
                    )));
                }
                Ok(partition)
            }
            Self::Quantity(distribution) => {
                quantity_skew(labels.len(), clients, distribution, 1, seed)
            }
        }
    }
}

impl fmt::Display for Partitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Iid => write!(f, "iid"),
            Self::Dirichlet { alpha, min_size: 1 } => write!(f, "dirichlet:{alpha}"),
            Self::Dirichlet { alpha, min_size } => write!(f, "dirichlet:{alpha}:{min_size}"),
            Self::Shards { per_client } => write!(f, "shards:{per_client}"),
            Self::Column => write!(f, "column"),
            Self::Quantity(SizeDistribution::LogNormal { sigma }) => {
                write!(f, "quantity:lognormal:{sigma}")
            }
            Self::Quantity(SizeDistribution::PowerLaw { exponent }) => {
                write!(f, "quantity:power:{exponent}")
            }
        }
    }
}

const FORMS: &str = "iid, dirichlet:ALPHA[:MIN_SIZE], shards:S, column, \
                     quantity:lognormal:SIGMA, quantity:power:EXPONENT";

impl FromStr for Partitioner {
    type Err = PartitionError;

    fn from_str(text: &str) -> Result<Self, PartitionError> {
        let bad = |why: &str| invalid(format!("`{text}`: {why} (forms: {FORMS})"));
        let number = |s: &str, what: &str| -> Result<f64, PartitionError> {
            match s.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                _ => Err(bad(&format!("{what} must be a non-negative number"))),
            }
        };
        let count = |s: &str, what: &str| -> Result<usize, PartitionError> {
            s.parse::<usize>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| bad(&format!("{what} must be a whole number of at least 1")))
        };
        let parts: Vec<&str> = text.split(':').collect();
        let parsed = match parts[..] {
            ["iid"] => Self::Iid,
            ["column"] => Self::Column,
            ["dirichlet", alpha] | ["dirichlet", alpha, _] => {
                let min_size = match parts.get(2) {
                    Some(min) => count(min, "the minimum size")?,
                    None => 1,
                };
                let alpha = number(alpha, "α")?;
                if alpha == 0.0 {
                    return Err(bad("α must be positive"));
                }
                Self::Dirichlet { alpha, min_size }
            }
            ["shards", per_client] => Self::Shards {
                per_client: count(per_client, "shards per client")?,
            },
            ["quantity", "lognormal", sigma] => Self::Quantity(SizeDistribution::LogNormal {
                sigma: number(sigma, "σ")?,
            }),
            ["quantity", "power", exponent] => {
                let exponent = number(exponent, "the exponent")?;
                if exponent == 0.0 {
                    return Err(bad("the exponent must be positive"));
                }
                Self::Quantity(SizeDistribution::PowerLaw { exponent })
            }
            _ => return Err(bad("unknown partitioner")),
        };
        Ok(parsed)
    }
}

impl TryFrom<String> for Partitioner {
    type Error = PartitionError;

    fn try_from(text: String) -> Result<Self, PartitionError> {
        text.parse()
    }
}

impl From<Partitioner> for String {
    fn from(partitioner: Partitioner) -> String {
        partitioner.to_string()
    }
}

/// Distinct labels each client holds (a quick measure of skew).
pub fn labels_per_client(partition: &Partition, labels: &[i64]) -> Vec<usize> {
    partition
        .clients
        .iter()
        .map(|list| {
            let present: BTreeSet<i64> = list
                .iter()
                .filter_map(|&i| labels.get(i).copied())
                .collect();
            present.len()
        })
        .collect()
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;
