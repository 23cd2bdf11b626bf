//! Server-side partition assignors of the consumer group protocol (KIP-848): `uniform` (the
//! default: balanced and sticky) and `range` (per topic, contiguous ranges in member-id order,
//! so co-partitioned topics land together), as Kafka's group coordinator names them.
//!
//! An assignor maps each member's subscribed topics (already resolved to names) and each
//! subscribed topic's partition count to a target assignment. Everything is ordered
//! (`BTreeMap`/`BTreeSet`), so the same input always gives the same output.

use std::collections::{BTreeMap, BTreeSet};

/// A topic partition by name.
pub type Tp = (String, i32);

/// Member id → the partitions assigned to it.
pub type Assignment = BTreeMap<String, BTreeSet<Tp>>;

/// The assignors served, by the names clients pass as `group.remote.assignor` (librdkafka) /
/// `group.remote.assignor` (Java); the first is the default.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// Compute a target assignment. `members`: member id → subscribed topic names; `partitions`:
/// topic → partition count (topics missing here do not exist and get nothing); `previous`: the
/// last target (the uniform assignor keeps what it can of it). Unknown assignor names are the
/// caller's to refuse (UNSUPPORTED_ASSIGNOR); here they fall back to `uniform`.
pub fn assign(
    assignor: &str,
    members: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, i32>,
    previous: &Assignment,
) -> Assignment {
    match assignor {
        "range" => range(members, partitions),
        _ => uniform(members, partitions, previous),
    }
}

/// Per topic: the members subscribed to it, in member-id order, each get a contiguous range;
/// the first `count % n` get one partition more.
fn range(members: &BTreeMap<String, BTreeSet<String>>, partitions: &BTreeMap<String, i32>) -> Assignment {
    let mut out: Assignment = members.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (topic, &count) in partitions {
        let subs: Vec<&String> = members.iter().filter(|(_, ts)| ts.contains(topic)).map(|(m, _)| m).collect();
        if subs.is_empty() || count <= 0 {
            continue;
        }
        let n = subs.len() as i32;
        let (base, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subs.into_iter().enumerate() {
            let take = base + i32::from((i as i32) < extra);
            let set = out.get_mut(m).expect("member listed");
            for p in next..next + take {
                set.insert((topic.clone(), p));
            }
            next += take;
        }
    }
    out
}

/// Balanced and sticky: every member keeps the partitions of its previous target that it is
/// still subscribed to (up to its fair share), the rest go one by one to the eligible member
/// holding the fewest, then partitions move from the fullest to the emptiest eligible member
/// until no move narrows the gap (counts differ by at most one among members that could
/// exchange partitions; with identical subscriptions that is a perfect balance).
fn uniform(
    members: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, i32>,
    previous: &Assignment,
) -> Assignment {
    let mut out: Assignment = members.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    if members.is_empty() {
        return out;
    }
    // Every partition of a subscribed topic, with the members that may own it.
    let mut eligible: BTreeMap<Tp, Vec<&String>> = BTreeMap::new();
    for (topic, &count) in partitions {
        let subs: Vec<&String> = members.iter().filter(|(_, ts)| ts.contains(topic)).map(|(m, _)| m).collect();
        if subs.is_empty() {
            continue;
        }
        for p in 0..count.max(0) {
            eligible.insert((topic.clone(), p), subs.clone());
        }
    }
    // Fair share of a member: ceil(partitions it may own / members competing for them), an
    // upper bound that keeps stickiness from hoarding.
    let share = |m: &String| -> usize {
        let mut sum = 0f64;
        for subs in eligible.values() {
            if subs.contains(&m) {
                sum += 1.0 / subs.len() as f64;
            }
        }
        sum.ceil() as usize
    };
    let shares: BTreeMap<&String, usize> = members.keys().map(|m| (m, share(m))).collect();
    let mut owner: BTreeMap<Tp, String> = BTreeMap::new();
    for (m, prev) in previous {
        let Some(set) = out.get_mut(m) else { continue };
        for tp in prev {
            if set.len() >= shares[m] {
                break;
            }
            if eligible.get(tp).is_some_and(|subs| subs.contains(&m)) && !owner.contains_key(tp) {
                set.insert(tp.clone());
                owner.insert(tp.clone(), m.clone());
            }
        }
    }
    for (tp, subs) in &eligible {
        if owner.contains_key(tp) {
            continue;
        }
        let m = subs.iter().min_by_key(|m| (out[**m].len(), **m)).expect("non-empty");
        out.get_mut(*m).expect("member").insert(tp.clone());
        owner.insert(tp.clone(), (*m).clone());
    }
    // Balance: bounded by the partition count (each move narrows a gap of two or more).
    for _ in 0..eligible.len() {
        let mut best: Option<(usize, Tp, String)> = None;
        for (tp, from) in &owner {
            let from_n = out[from].len();
            for to in &eligible[tp] {
                let to_n = out[*to].len();
                if from_n > to_n + 1 && best.as_ref().is_none_or(|b| from_n - to_n > b.0) {
                    best = Some((from_n - to_n, tp.clone(), (*to).clone()));
                }
            }
        }
        let Some((_, tp, to)) = best else { break };
        let from = owner.insert(tp.clone(), to.clone()).expect("owned");
        out.get_mut(&from).expect("member").remove(&tp);
        out.get_mut(&to).expect("member").insert(tp);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(list: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        list.iter().map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect())).collect()
    }

    fn parts(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn all(a: &Assignment) -> Vec<Tp> {
        let mut v: Vec<Tp> = a.values().flatten().cloned().collect();
        v.sort();
        v
    }

    #[test]
    fn range_gives_contiguous_ranges_in_member_order() {
        let a = assign("range", &subs(&[("b", &["t"]), ("a", &["t"])]), &parts(&[("t", 5)]), &Assignment::new());
        let a_parts: Vec<i32> = a["a"].iter().map(|(_, p)| *p).collect();
        let b_parts: Vec<i32> = a["b"].iter().map(|(_, p)| *p).collect();
        assert_eq!((a_parts, b_parts), (vec![0, 1, 2], vec![3, 4]));
    }

    #[test]
    fn uniform_balances_every_partition_exactly_once() {
        let m = subs(&[("a", &["t", "u"]), ("b", &["t", "u"]), ("c", &["t", "u"])]);
        let p = parts(&[("t", 4), ("u", 3), ("missing", 0)]);
        let a = assign("uniform", &m, &p, &Assignment::new());
        assert_eq!(all(&a).len(), 7);
        let mut sizes: Vec<usize> = a.values().map(|s| s.len()).collect();
        sizes.sort();
        assert_eq!(sizes, vec![2, 2, 3]);
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins() {
        let p = parts(&[("t", 6)]);
        let before = assign("uniform", &subs(&[("a", &["t"]), ("b", &["t"])]), &p, &Assignment::new());
        let after = assign("uniform", &subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]), &p, &before);
        assert_eq!(all(&after).len(), 6);
        for m in ["a", "b"] {
            assert_eq!(after[m].len(), 2);
            assert!(after[m].is_subset(&before[m]), "{m} kept part of what it had: {before:?} -> {after:?}");
        }
    }

    #[test]
    fn uniform_respects_heterogeneous_subscriptions() {
        let m = subs(&[("a", &["t"]), ("b", &["t", "u"])]);
        let a = assign("uniform", &m, &parts(&[("t", 2), ("u", 2)]), &Assignment::new());
        assert!(a["a"].iter().all(|(t, _)| t == "t"));
        assert_eq!(all(&a).len(), 4);
        assert_eq!((a["a"].len(), a["b"].len()), (2, 2));
    }
}
