use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 9, last))
}

fn is_evicted(u: &Unauthenticated) -> bool {
    u.eviction.evicted.load(Ordering::Acquire)
}

#[test]
fn an_address_over_its_share_is_refused_and_others_are_not() {
    let pool = Admission::new(2, 100);
    let a1 = pool.admit(ip(1)).unwrap();
    let _a2 = pool.admit(ip(1)).unwrap();
    assert_eq!(pool.admit(ip(1)).unwrap_err(), Refused);
    let _b = pool.admit(ip(2)).unwrap();
    assert_eq!(pool.held(), 3);
    // A closed (or authenticated) connection gives its place back.
    drop(a1);
    assert_eq!(pool.held(), 2);
    let _a3 = pool.admit(ip(1)).unwrap();
}

#[test]
fn an_overfull_pool_evicts_the_oldest_connection_of_the_heaviest_address() {
    let pool = Admission::new(10, 4);
    let attacker: Vec<_> = (0..3).map(|_| pool.admit(ip(1)).unwrap()).collect();
    let admin = pool.admit(ip(2)).unwrap();
    assert_eq!(pool.held(), 4);
    // Every further connection, from the attacker or from anyone else, pushes out one of the
    // attacker's, oldest first; the admin's, older than all but one, stays.
    let newcomer = pool.admit(ip(3)).unwrap();
    assert!(is_evicted(&attacker[0]));
    assert!(!is_evicted(&attacker[1]) && !is_evicted(&admin) && !is_evicted(&newcomer));
    let more: Vec<_> = (0..5).map(|_| pool.admit(ip(1)).unwrap()).collect();
    assert!(!is_evicted(&admin), "the admin's connection was evicted");
    assert!(!is_evicted(&newcomer));
    assert_eq!(pool.held(), 4);
    // The attacker's newest connections push out its own older ones.
    assert!(is_evicted(&attacker[1]) && is_evicted(&attacker[2]));
    assert!(is_evicted(&more[0]) && is_evicted(&more[1]) && is_evicted(&more[2]));
    assert!(!is_evicted(&more[3]) && !is_evicted(&more[4]));
    // Dropping an evicted connection changes nothing more.
    drop(attacker);
    assert_eq!(pool.held(), 4);
}

#[test]
fn among_equally_heavy_addresses_the_oldest_connection_goes() {
    let pool = Admission::new(10, 3);
    let first = pool.admit(ip(1)).unwrap();
    let second = pool.admit(ip(2)).unwrap();
    let third = pool.admit(ip(3)).unwrap();
    let fourth = pool.admit(ip(4)).unwrap();
    assert!(is_evicted(&first));
    assert!(![&second, &third, &fourth].iter().any(|u| is_evicted(u)));
}

#[tokio::test]
async fn an_evicted_connection_learns_it_even_if_it_was_not_waiting_yet() {
    let pool = Admission::new(10, 1);
    let old = pool.admit(ip(1)).unwrap();
    let eviction = old.eviction();
    let _new = pool.admit(ip(2)).unwrap();
    tokio::time::timeout(Duration::from_secs(1), eviction.wait())
        .await
        .expect("the eviction signal was lost");
}
