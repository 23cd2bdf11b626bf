//! Retries of start-up requests against clusters that are still settling (Apache Kafka right
//! after CreateTopics: the controller has named the leader but the broker has not taken the
//! partition yet and answers NOT_LEADER_OR_FOLLOWER / LEADER_NOT_AVAILABLE for a moment).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::{resolve, Connector, TopicLayout};

/// Kafka error codes that mean "not yet" at start-up: UNKNOWN_TOPIC_OR_PARTITION (3),
/// LEADER_NOT_AVAILABLE (5), NOT_LEADER_OR_FOLLOWER (6), UNKNOWN_LEADER_EPOCH (75).
const SETTLING: [i16; 4] = [3, 5, 6, 75];

fn settling(err: &str) -> bool {
    // Conn::list_offsets reports "ListOffsets <topic>/<p>: error code <n>".
    err.rsplit_once("error code ").and_then(|(_, c)| c.trim().parse::<i16>().ok()).is_some_and(|c| SETTLING.contains(&c))
}

/// [`Conn::list_offsets`] on `addr`, retried every 100 ms while the broker answers a settling
/// error code or refuses the connection, until `within` has passed; then the last error.
pub fn list_offsets_settled(
    connector: &Connector,
    addr: SocketAddr,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
    within: Duration,
) -> Result<HashMap<i32, i64>, String> {
    let deadline = Instant::now() + within;
    loop {
        let r = connector.connect(addr, Duration::from_secs(5)).and_then(|mut c| c.list_offsets(topic, partitions, timestamp));
        match r {
            Ok(m) => return Ok(m),
            Err(e) if settling(&e) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e),
        }
    }
}

/// Errors worth another try at start-up after a metadata refresh: a settling error code, or the
/// connection itself (refused, reset, no answer: a broker that has just died or restarted).
/// Other error codes (e.g. an authorization error) are final.
fn retry_after_refresh(err: &str) -> bool {
    settling(err) || !err.contains("error code ")
}

/// Where each partition of `topic` is led now, asking the bootstrap brokers in turn (the first
/// that answers). Partitions without a leader (or with an unknown one) are left out.
fn leaders_now(connector: &Connector, boot: &[SocketAddr], topic: &str) -> Result<Vec<(i32, SocketAddr)>, String> {
    let mut last = String::from("no bootstrap broker");
    for &b in boot {
        let md = match connector.connect_with_read_timeout(b, Duration::from_secs(2), Duration::from_secs(5))
            .and_then(|mut c| c.metadata(Some(&[topic.to_string()]), false))
        {
            Ok(md) => md,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let brokers: HashMap<i32, String> = md.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
        let mut out = Vec::new();
        for t in md.topics.iter().filter(|t| t.name.as_ref().is_some_and(|n| n.0.to_string() == topic) && t.error_code == 0) {
            for p in t.partitions.iter().filter(|p| p.error_code == 0) {
                if let Some(a) = brokers.get(&p.leader_id.0).and_then(|a| resolve(a).ok()) {
                    out.push((p.partition_index, a));
                }
            }
        }
        return Ok(out);
    }
    Err(format!("Metadata: {last}"))
}

/// The latest offset of every partition of every layout (where consumers start), asked of each
/// partition's leader. A cluster that has just lost a node still names it as leader until its
/// controller fences it (KRaft `broker.session.timeout.ms`, 9 s by default), and a new leader
/// answers NOT_LEADER_OR_FOLLOWER for a moment: a refused connection or a settling error code
/// is retried every 250 ms after a Metadata refresh (from the first bootstrap broker that
/// answers), which also moves the partitions in `layouts` to their new leaders. After `within`
/// the last error, naming the topic, partitions and broker.
pub fn start_offsets_following(
    connector: &Connector,
    boot: &[SocketAddr],
    layouts: &mut [TopicLayout],
    within: Duration,
) -> Result<Vec<Vec<(i32, i64)>>, String> {
    let started = Instant::now();
    let deadline = started + within;
    let mut out = Vec::with_capacity(layouts.len());
    for layout in layouts.iter_mut() {
        let mut offs: HashMap<i32, i64> = HashMap::new();
        let mut refreshes = 0u32;
        let mut md_err: Option<String> = None;
        loop {
            let mut failed = None;
            let mut addrs: Vec<SocketAddr> = layout.leaders.iter().map(|(_, a)| *a).collect();
            addrs.sort();
            addrs.dedup();
            for a in addrs {
                let parts: Vec<i32> =
                    layout.leaders.iter().filter(|(p, x)| *x == a && !offs.contains_key(p)).map(|(p, _)| *p).collect();
                if parts.is_empty() {
                    continue;
                }
                match connector.connect_with_read_timeout(a, Duration::from_secs(2), Duration::from_secs(5))
                    .and_then(|mut c| c.list_offsets(&layout.topic, &parts, -1))
                {
                    Ok(m) => offs.extend(m),
                    Err(e) => {
                        failed = Some((a, parts, e));
                    }
                }
            }
            let Some((a, parts, e)) = failed else { break };
            if !retry_after_refresh(&e) || Instant::now() >= deadline {
                return Err(format!(
                    "start offsets of {} partition(s) {parts:?} from their leader {a}: {e} (after {:.1} s and {refreshes} metadata \
                     refresh(es){})",
                    layout.topic,
                    started.elapsed().as_secs_f64(),
                    md_err.map(|m| format!("; the last refresh failed: {m}")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
            refreshes += 1;
            match leaders_now(connector, boot, &layout.topic) {
                Ok(now) => {
                    md_err = None;
                    for (p, addr) in layout.leaders.iter_mut() {
                        if let Some((_, n)) = now.iter().find(|(q, _)| q == p) {
                            *addr = *n;
                        }
                    }
                }
                // No bootstrap broker answers yet: try the leaders again, within the deadline.
                Err(me) => md_err = Some(me),
            }
        }
        let mut v: Vec<(i32, i64)> = offs.into_iter().collect();
        v.sort();
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn settling_codes_are_recognised() {
        assert!(super::settling("ListOffsets t/0: error code 6"));
        assert!(super::settling("ListOffsets t/3: error code 5"));
        assert!(!super::settling("ListOffsets t/0: error code 1"));
        assert!(!super::settling("connection refused"));
    }

    #[test]
    fn refused_connections_and_settling_codes_are_retried_other_codes_are_not() {
        assert!(super::retry_after_refresh("cannot connect to broker 127.0.0.1:1: Connection refused (os error 111)"));
        assert!(super::retry_after_refresh("read ListOffsets response from 127.0.0.1:1: connection reset"));
        assert!(super::retry_after_refresh("ListOffsets t/0: error code 6"));
        assert!(!super::retry_after_refresh("ListOffsets t/0: error code 29"));
    }
}
