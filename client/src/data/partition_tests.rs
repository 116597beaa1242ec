use super::*;
use proptest::prelude::*;

/// `n` labels over `classes` classes with unequal class sizes (class c has weight c + 1).
fn skewed_labels(n: usize, classes: i64, seed: u64) -> Vec<i64> {
    let mut rng = seeded_rng(seed);
    let total: i64 = (1..=classes).sum();
    (0..n)
        .map(|_| {
            let mut pick = rng.random_range(0..total);
            let mut class = 0;
            while pick > class {
                pick -= class + 1;
                class += 1;
            }
            class
        })
        .collect()
}

fn fractions(counts: &[usize]) -> Vec<f64> {
    let total: usize = counts.iter().sum();
    counts
        .iter()
        .map(|&c| c as f64 / total.max(1) as f64)
        .collect()
}

/// Mean total-variation distance between each client's label distribution and the global one.
fn mean_label_skew(partition: &Partition, labels: &[i64], classes: usize) -> f64 {
    let global = fractions(
        &Partition::from_lists(vec![(0..labels.len()).collect()]).label_counts(labels, classes)[0],
    );
    let per_client = partition.label_counts(labels, classes);
    let total: f64 = per_client
        .iter()
        .map(|counts| {
            let local = fractions(counts);
            0.5 * local
                .iter()
                .zip(&global)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
        })
        .sum();
    total / per_client.len() as f64
}

fn coefficient_of_variation(sizes: &[usize]) -> f64 {
    let n = sizes.len() as f64;
    let mean = sizes.iter().sum::<usize>() as f64 / n;
    let var = sizes
        .iter()
        .map(|&s| (s as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    var.sqrt() / mean
}

#[test]
fn iid_sizes_are_even_and_label_mix_matches_the_population() {
    let labels = skewed_labels(10_000, 10, 1);
    let partition = iid(labels.len(), 10, 7).unwrap();
    assert!(partition.is_exact_cover(labels.len()));
    assert!(partition.sizes().iter().all(|&s| s == 1000));
    let global =
        fractions(&Partition::from_lists(vec![(0..10_000).collect()]).label_counts(&labels, 10)[0]);
    for counts in partition.label_counts(&labels, 10) {
        for (local, global) in fractions(&counts).iter().zip(&global) {
            // Binomial sd of a fraction of 1000 is at most 0.016; 0.06 is over 3.5 sd.
            assert!((local - global).abs() < 0.06, "{local} vs {global}");
        }
    }
    let uneven = iid(10, 3, 0).unwrap();
    assert_eq!(uneven.sizes(), vec![4, 3, 3]);
}

#[test]
fn dirichlet_skew_grows_as_alpha_shrinks() {
    let labels = skewed_labels(20_000, 10, 2);
    let skew = |alpha| {
        let partition = dirichlet(&labels, 20, alpha, 1, 3).unwrap();
        assert!(partition.is_exact_cover(labels.len()));
        mean_label_skew(&partition, &labels, 10)
    };
    let (tiny, small, large, huge) = (skew(0.05), skew(0.3), skew(5.0), skew(1000.0));
    assert!(
        tiny > small && small > large && large > huge,
        "{tiny} {small} {large} {huge}"
    );
    assert!(
        tiny > 0.6,
        "α=0.05 should leave clients with few classes: {tiny}"
    );
    assert!(huge < 0.05, "α=1000 should be near IID: {huge}");
}

#[test]
fn dirichlet_meets_the_minimum_size_or_says_why_not() {
    let labels = skewed_labels(2_000, 10, 4);
    let partition = dirichlet(&labels, 20, 0.3, 30, 5).unwrap();
    assert!(
        partition.sizes().iter().all(|&s| s >= 30),
        "{:?}",
        partition.sizes()
    );
    let err = dirichlet(&labels, 20, 0.01, 99, 5).unwrap_err();
    assert!(matches!(err, PartitionError::Infeasible(_)), "{err:?}");
    assert!(dirichlet(&labels, 20, 0.0, 1, 5).is_err());
    assert!(dirichlet(&labels, 20, f64::NAN, 1, 5).is_err());
    // Vanishing α: Gamma variates underflow, and whole classes go to single clients.
    let partition = dirichlet(&labels, 5, 1e-300, 0, 6).unwrap();
    assert!(partition.is_exact_cover(labels.len()));
}

#[test]
fn shards_give_each_client_at_most_s_labels() {
    let labels = skewed_labels(6_000, 10, 5);
    for per_client in [1, 2, 3] {
        let partition = shards(&labels, 50, per_client, 9).unwrap();
        assert!(partition.is_exact_cover(labels.len()));
        assert_eq!(partition.len(), 50);
        let distinct = labels_per_client(&partition, &labels);
        assert!(
            distinct.iter().all(|&d| d >= 1 && d <= per_client),
            "{distinct:?}"
        );
        // D'Hondt keeps shard sizes close, so client sizes stay within a factor of two.
        let sizes = partition.sizes();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(*max <= 2 * *min, "{sizes:?}");
    }
    assert!(
        shards(&labels, 4, 2, 0).is_err(),
        "8 shards cannot cover 10 labels"
    );
    assert!(shards(&labels, 10, 0, 0).is_err());
    assert!(
        shards(&labels[..5], 3, 2, 0).is_err(),
        "6 shards need 6 examples"
    );
}

#[test]
fn by_column_groups_sites_in_sorted_order() {
    let sites = ["b", "a", "c", "a", "b", "b"].map(String::from);
    let partition = by_column(&sites).unwrap();
    assert_eq!(partition.keys, vec!["a", "b", "c"]);
    assert_eq!(partition.clients, vec![vec![1, 3], vec![0, 4, 5], vec![2]]);
    assert!(partition.is_exact_cover(6));
    let numeric = by_column(&[3, 1, 3]).unwrap();
    assert_eq!(numeric.keys, vec!["1", "3"]);
    assert!(by_column::<i32>(&[]).is_err());
}

#[test]
fn quantity_skew_spreads_sizes_and_keeps_the_minimum() {
    let n = 50_000;
    let cv = |distribution| {
        let partition = quantity_skew(n, 100, distribution, 10, 4).unwrap();
        assert!(partition.is_exact_cover(n));
        assert!(partition.sizes().iter().all(|&s| s >= 10));
        coefficient_of_variation(&partition.sizes())
    };
    let flat = cv(SizeDistribution::LogNormal { sigma: 0.0 });
    let mild = cv(SizeDistribution::LogNormal { sigma: 0.5 });
    let wide = cv(SizeDistribution::LogNormal { sigma: 1.5 });
    let heavy = cv(SizeDistribution::PowerLaw { exponent: 1.2 });
    assert!(flat < 1e-9, "σ = 0 must give equal sizes: {flat}");
    assert!(mild > 0.3 && wide > mild, "{mild} {wide}");
    assert!(heavy > 0.5, "{heavy}");
    let err = quantity_skew(100, 20, SizeDistribution::LogNormal { sigma: 1.0 }, 10, 0);
    assert!(err.is_err());
}

#[test]
fn partitioner_names_parse_and_print() {
    for text in [
        "iid",
        "dirichlet:0.3",
        "dirichlet:0.3:10",
        "shards:2",
        "column",
        "quantity:lognormal:1.5",
        "quantity:power:1.2",
    ] {
        let parsed: Partitioner = text.parse().unwrap();
        assert_eq!(parsed.to_string(), text);
    }
    for bad in [
        "",
        "dirichlet",
        "dirichlet:0",
        "dirichlet:-1",
        "shards:0",
        "quantity:zipf:1",
        "iid:3",
    ] {
        let err = bad.parse::<Partitioner>().unwrap_err();
        assert!(err.to_string().contains("forms:"), "{err}");
    }
}

#[test]
fn column_partitioner_needs_a_matching_group_column() {
    let labels = vec![0, 1, 0, 1];
    let sites: Vec<String> = ["x", "y", "x", "z"].map(String::from).to_vec();
    let column = Partitioner::Column;
    assert_eq!(
        column.partition(&labels, Some(&sites), 3, 0).unwrap().keys,
        vec!["x", "y", "z"]
    );
    let err = column.partition(&labels, Some(&sites), 5, 0).unwrap_err();
    assert!(
        err.to_string().contains("3 distinct values (x, y, z)"),
        "{err}"
    );
    assert!(
        column
            .partition(&labels, None, 3, 0)
            .unwrap_err()
            .to_string()
            .contains("group=")
    );
}

fn any_partitioner() -> impl Strategy<Value = Partitioner> {
    prop_oneof![
        Just(Partitioner::Iid),
        (0.05f64..10.0).prop_map(|alpha| Partitioner::Dirichlet { alpha, min_size: 1 }),
        (1usize..4).prop_map(|per_client| Partitioner::Shards { per_client }),
        (0.0f64..2.0)
            .prop_map(|sigma| Partitioner::Quantity(SizeDistribution::LogNormal { sigma })),
        (0.5f64..3.0)
            .prop_map(|exponent| Partitioner::Quantity(SizeDistribution::PowerLaw { exponent })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_partition_is_an_exact_cover_and_seeded(
        partitioner in any_partitioner(),
        n in 40usize..600,
        clients in 1usize..12,
        classes in 1i64..8,
        seed in any::<u64>(),
    ) {
        let labels = skewed_labels(n, classes, seed ^ 1);
        let first = partitioner.partition(&labels, None, clients, seed);
        let again = partitioner.partition(&labels, None, clients, seed);
        prop_assert_eq!(&first, &again);
        match first {
            Ok(partition) => {
                prop_assert_eq!(partition.len(), clients);
                prop_assert!(partition.is_exact_cover(n));
                prop_assert!(partition.clients.iter().all(|l| l.windows(2).all(|w| w[0] < w[1])));
                prop_assert!(partition.sizes().iter().all(|&s| s >= 1));
            }
            // Dirichlet may leave a client empty in every attempt; shards may be too few to
            // keep labels apart. Nothing else may fail on these sizes.
            Err(e) => {
                let distinct = labels.iter().collect::<BTreeSet<_>>().len();
                let allowed = match partitioner {
                    Partitioner::Dirichlet { .. } => true,
                    Partitioner::Shards { per_client } => clients * per_client < distinct,
                    _ => false,
                };
                prop_assert!(allowed, "{}", e);
            }
        }
    }

    #[test]
    fn different_seeds_give_different_partitions(seed in any::<u64>()) {
        let labels = skewed_labels(500, 5, 3);
        for partitioner in [Partitioner::Iid, Partitioner::Dirichlet { alpha: 0.5, min_size: 1 }, Partitioner::Shards { per_client: 2 }] {
            let a = partitioner.partition(&labels, None, 10, seed).unwrap();
            let b = partitioner.partition(&labels, None, 10, seed.wrapping_add(1)).unwrap();
            prop_assert_ne!(a, b);
        }
    }
}
