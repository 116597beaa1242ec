//! The communication graph of SecAgg+: who shares secrets and pairwise masks with whom.
//!
//! Bell et al. 2020 replace the complete graph of classic SecAgg with a random k-regular graph.
//! We use their Harary construction: place the clients on a ring in a random order and join
//! each to its `k/2` nearest ring neighbours on either side (for odd `k` and an even number of
//! clients, also to the client diametrically opposite). The order is a uniform permutation
//! drawn from a ChaCha20 stream keyed by the session id, so every client and the server derive
//! the same graph from the key directory, and nobody picks it.
//!
//! When `k >= m - 1` the graph is complete: classic SecAgg.

use rand::rngs::ChaCha20Rng;
use rand::{RngExt, SeedableRng};

use super::ClientId;

/// An undirected regular graph over the clients of one round, indexed densely in id order.
#[derive(Debug, Clone)]
pub struct Graph {
    ids: Vec<ClientId>,
    adjacency: Vec<Vec<u32>>,
    complete: bool,
}

impl Graph {
    /// Builds the graph over `ids` (sorted, distinct) with degree `k`. An odd `k` with an odd
    /// number of clients has no regular Harary graph and is rounded up to `k + 1`.
    pub fn harary(ids: Vec<ClientId>, k: usize, seed: [u8; 32]) -> Self {
        let m = ids.len();
        if m == 0 {
            return Graph {
                ids,
                adjacency: Vec::new(),
                complete: true,
            };
        }
        if k + 1 >= m {
            let adjacency = (0..m as u32)
                .map(|i| (0..m as u32).filter(|&j| j != i).collect())
                .collect();
            return Graph {
                ids,
                adjacency,
                complete: true,
            };
        }
        let k = if k % 2 == 1 && m % 2 == 1 { k + 1 } else { k };
        if k + 1 >= m {
            return Graph::harary(ids, m, seed);
        }
        // Uniform permutation: Fisher–Yates with unbiased bounded draws.
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut ring: Vec<u32> = (0..m as u32).collect();
        for i in (1..m).rev() {
            let j = rng.random_range(0..=i);
            ring.swap(i, j);
        }
        let half = k / 2;
        let mut adjacency = vec![Vec::with_capacity(k); m];
        for (pos, &node) in ring.iter().enumerate() {
            let list = &mut adjacency[node as usize];
            for step in 1..=half {
                list.push(ring[(pos + step) % m]);
                list.push(ring[(pos + m - step) % m]);
            }
            if k % 2 == 1 {
                list.push(ring[(pos + m / 2) % m]);
            }
            list.sort_unstable();
        }
        Graph {
            ids,
            adjacency,
            complete: false,
        }
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no clients.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether this is the complete graph (classic SecAgg).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The client ids, sorted; index `i` of every other method refers to `ids()[i]`.
    pub fn ids(&self) -> &[ClientId] {
        &self.ids
    }

    /// The dense index of a client id.
    pub fn index_of(&self, id: ClientId) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    /// The neighbours of client `index`, as sorted dense indices.
    pub fn neighbours(&self, index: usize) -> &[u32] {
        self.adjacency.get(index).map_or(&[], Vec::as_slice)
    }

    /// Whether clients `a` and `b` (dense indices) are joined.
    pub fn are_neighbours(&self, a: usize, b: usize) -> bool {
        self.neighbours(a).binary_search(&(b as u32)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harary_graph_is_regular_symmetric_and_simple() {
        for (m, k) in [(10, 4), (50, 11), (51, 11), (200, 16), (7, 6), (5, 10)] {
            let g = Graph::harary((0..m).map(|i| i * 3).collect(), k as usize, [m as u8; 32]);
            let expected = if (k as usize) + 1 >= m as usize {
                m as usize - 1
            } else if k % 2 == 1 && m % 2 == 1 {
                k as usize + 1
            } else {
                k as usize
            };
            for i in 0..g.len() {
                let n = g.neighbours(i);
                assert_eq!(n.len(), expected, "m={m} k={k}");
                assert!(!n.contains(&(i as u32)));
                assert!(n.windows(2).all(|w| w[0] < w[1]));
                for &j in n {
                    assert!(g.are_neighbours(j as usize, i));
                }
            }
        }
    }

    #[test]
    fn the_seed_decides_the_graph() {
        let ids: Vec<ClientId> = (0..100).collect();
        let a = Graph::harary(ids.clone(), 8, [1; 32]);
        let b = Graph::harary(ids.clone(), 8, [1; 32]);
        let c = Graph::harary(ids, 8, [2; 32]);
        assert_eq!(a.adjacency, b.adjacency);
        assert_ne!(a.adjacency, c.adjacency);
    }
}
