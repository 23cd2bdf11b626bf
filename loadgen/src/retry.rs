//! Retries of start-up requests against clusters that are still settling (Apache Kafka right
//! after CreateTopics: the controller has named the leader but the broker has not taken the
//! partition yet and answers NOT_LEADER_OR_FOLLOWER / LEADER_NOT_AVAILABLE for a moment).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::Conn;

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
    addr: SocketAddr,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
    within: Duration,
) -> Result<HashMap<i32, i64>, String> {
    let deadline = Instant::now() + within;
    loop {
        let r = Conn::connect(addr, Duration::from_secs(5)).and_then(|mut c| c.list_offsets(topic, partitions, timestamp));
        match r {
            Ok(m) => return Ok(m),
            Err(e) if settling(&e) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e),
        }
    }
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
}
