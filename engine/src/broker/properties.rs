//! The broker's configuration file (`broker --config FILE`): a `server.properties`-style file
//! with Kafka's broker key names. Every key is validated; an unknown or unsupported one is an
//! error naming the file, the line and the key (the broker refuses to start rather than run
//! with a setting it ignores). Precedence: command line > this file > built-in default (the
//! command line is applied after the file by the `broker` binary).

use std::path::Path;

use super::BrokerConfig;
use crate::log::topic_config;

/// Keys this file accepts (documented in docs/broker.md).
pub const KEYS: &[&str] = &[
    "log.dirs",
    "log.dir",
    "listeners",
    "node.id",
    "broker.id",
    "num.partitions",
    "auto.create.topics.enable",
    "socket.request.max.bytes",
    "queued.max.request.bytes",
    "connections.max.idle.ms",
    "max.connections",
    "max.connections.per.ip",
    "message.max.bytes",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.bytes",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.message.timestamp.type",
    "min.insync.replicas",
    "compression.type",
    "producer.id.expiration.ms",
];

fn num<T: std::str::FromStr>(key: &str, v: &str, min: i64, max: i64) -> Result<T, String> {
    match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => n.to_string().parse::<T>().map_err(|_| format!("{key}={v}: out of range")),
        _ => Err(format!("{key}={v}: want an integer in [{min}, {max}]")),
    }
}

/// Apply the file at `path` to `cfg`.
pub fn apply_file(cfg: &mut BrokerConfig, path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the configuration file {}: {e}", path.display()))?;
    apply(cfg, &text).map_err(|e| format!("configuration file {}: {e}", path.display()))
}

/// Apply `server.properties` text to `cfg`. Errors name the line and the key.
pub fn apply(cfg: &mut BrokerConfig, text: &str) -> Result<(), String> {
    let pairs = topic_config::parse_properties(text).map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    // log.retention.ms > minutes > hours, log.roll.ms > hours (Kafka's precedence).
    let mut retention: Option<(u8, Option<u64>)> = None;
    let mut roll: Option<(u8, u64)> = None;
    for (line, key, v) in &pairs {
        let at = |e: String| format!("line {line}: {e}");
        if !seen.insert(key.as_str()) {
            return Err(at(format!("{key} is given twice")));
        }
        let log_key = |topic_key: &str| -> Result<String, String> {
            topic_config::validate(topic_key, v, usize::MAX).map_err(|e| at(format!("{key}: {e}")))
        };
        match key.as_str() {
            "log.dirs" | "log.dir" => {
                if v.contains(',') {
                    return Err(at(format!("{key}={v}: this broker serves one data directory")));
                }
                cfg.data_dir = v.into();
            }
            "listeners" => {
                // PROTOCOL://<ip>:<port>[,…] (issue 18: PLAINTEXT, SASL_PLAINTEXT); one PLAINTEXT
                // listener is `--listen`, more (or another protocol) are `--listeners`.
                for item in v.split(',').map(str::trim) {
                    let addr = item.split_once("://").map_or("", |(_, a)| a);
                    if !addr.starts_with(':') && addr.parse::<std::net::SocketAddr>().is_err() {
                        return Err(at(format!(
                            "listeners={v}: want PROTOCOL://<ip>:<port> listeners (an IP address, not a host name), got {item:?}"
                        )));
                    }
                }
                let list = super::auth::parse_listeners(v).map_err(|e| at(format!("listeners={v}: {e}")))?;
                match list.as_slice() {
                    [one] if one.protocol == super::auth::SecurityProtocol::Plaintext => cfg.listen = one.addr,
                    _ => cfg.listeners = list,
                }
            }
            "node.id" | "broker.id" => {
                if v != "0" {
                    return Err(at(format!("{key}={v}: this single-node broker is node 0")));
                }
            }
            "num.partitions" => cfg.default_partitions = num(key, v, 1, cfg.partitions_per_topic_max as i64).map_err(at)?,
            "auto.create.topics.enable" => {
                cfg.auto_create_topics = v.parse().map_err(|_| at(format!("{key}={v}: want true or false")))?
            }
            "socket.request.max.bytes" => cfg.frame_bytes_max = num(key, v, 1, i32::MAX as i64).map_err(at)?,
            "queued.max.request.bytes" => cfg.request_bytes_in_flight_max = num(key, v, 1, i64::MAX).map_err(at)?,
            "connections.max.idle.ms" => cfg.connection_idle_ms = num(key, v, 1, i64::MAX).map_err(at)?,
            "group.consumer.session.timeout.ms" => cfg.consumer_session_timeout_ms = num(key, v, 1, i32::MAX as i64).map_err(at)?,
            "group.consumer.heartbeat.interval.ms" => cfg.consumer_heartbeat_interval_ms = num(key, v, 1, i32::MAX as i64).map_err(at)?,
            "max.connections" => cfg.connections_max = num(key, v, 1, i32::MAX as i64).map_err(at)?,
            "max.connections.per.ip" => cfg.connections_per_ip_max = num(key, v, 1, i32::MAX as i64).map_err(at)?,
            "message.max.bytes" => cfg.message_max_bytes = num(key, v, 0, i32::MAX as i64).map_err(at)?,
            "log.retention.ms" | "log.retention.minutes" | "log.retention.hours" => {
                let n: i64 = log_key("retention.ms")?.parse().map_err(|_| at(format!("{key}={v}")))?;
                let (rank, unit) = match key.as_str() {
                    "log.retention.ms" => (0, 1),
                    "log.retention.minutes" => (1, 60_000),
                    _ => (2, 3_600_000),
                };
                let ms = if n < 0 { None } else { Some((n as u64).checked_mul(unit).ok_or_else(|| at(format!("{key}={v}: too large")))?) };
                if retention.is_none_or(|(r, _)| rank < r) {
                    retention = Some((rank, ms));
                }
            }
            "log.retention.bytes" => {
                cfg.log.retention_bytes_max = log_key("retention.bytes")?.parse::<i64>().ok().and_then(|n| u64::try_from(n).ok())
            }
            "log.segment.bytes" => cfg.log.segment_bytes_max = log_key("segment.bytes")?.parse().map_err(|_| at(v.clone()))?,
            "log.roll.ms" | "log.roll.hours" => {
                let n: u64 = log_key("segment.ms")?.parse().map_err(|_| at(v.clone()))?;
                let (rank, unit) = if key == "log.roll.ms" { (0, 1) } else { (1, 3_600_000) };
                let ms = n.checked_mul(unit).ok_or_else(|| at(format!("{key}={v}: too large")))?;
                if roll.is_none_or(|(r, _)| rank < r) {
                    roll = Some((rank, ms));
                }
            }
            "log.cleanup.policy" => {
                let v = log_key("cleanup.policy")?;
                cfg.log.compact = v.contains("compact");
                cfg.log.delete = v.contains("delete");
            }
            "log.cleaner.delete.retention.ms" => {
                cfg.log.delete_retention_ms = log_key("delete.retention.ms")?.parse().map_err(|_| at(v.clone()))?
            }
            "log.message.timestamp.type" => cfg.log.log_append_time = log_key("message.timestamp.type")? == "LogAppendTime",
            "min.insync.replicas" => cfg.log.min_insync_replicas = log_key("min.insync.replicas")?.parse().map_err(|_| at(v.clone()))?,
            "compression.type" => {
                log_key("compression.type")?;
            }
            // Kafka's range: an int of at least 1.
            "producer.id.expiration.ms" => cfg.log.producer_id_expiration_ms = Some(num(key, v, 1, i32::MAX as i64).map_err(at)?),
            _ => {
                return Err(at(format!(
                    "unknown or unsupported key {key} (this broker honours: {}; see docs/broker.md)",
                    KEYS.join(", ")
                )))
            }
        }
    }
    if let Some((_, ms)) = retention {
        cfg.log.retention_ms = ms;
    }
    if let Some((_, ms)) = roll {
        cfg.log.segment_age_max_ms = Some(ms);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Durability;

    fn cfg() -> BrokerConfig {
        BrokerConfig::new("/d".into(), Durability::Group)
    }

    #[test]
    fn applies_kafka_keys() {
        let mut c = cfg();
        apply(
            &mut c,
            "# comment\nlog.dirs=/data\nlisteners=PLAINTEXT://127.0.0.1:9999\nnum.partitions=3\nlog.retention.hours=2\n\
             log.retention.minutes=5\nlog.segment.bytes=2048\nmessage.max.bytes=5000\nlog.retention.bytes=-1\n\
             log.roll.hours=1\nlog.message.timestamp.type=LogAppendTime\n",
        )
        .unwrap();
        assert_eq!(c.data_dir, std::path::PathBuf::from("/data"));
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.default_partitions, 3);
        assert_eq!(c.log.retention_ms, Some(5 * 60_000), "minutes win over hours");
        assert_eq!(c.log.segment_bytes_max, 2048);
        assert_eq!(c.message_max_bytes, 5000);
        assert_eq!(c.log.retention_bytes_max, None);
        assert_eq!(c.log.segment_age_max_ms, Some(3_600_000));
        assert!(c.log.log_append_time);
        let mut c = cfg();
        apply(&mut c, "log.retention.ms=-1\n").unwrap();
        assert_eq!(c.log.retention_ms, None);
        assert_eq!(c.log.producer_id_expiration_ms, Some(86_400_000), "Kafka's default");
        apply(&mut c, "producer.id.expiration.ms=60000\n").unwrap();
        assert_eq!(c.log.producer_id_expiration_ms, Some(60_000));
        assert!(apply(&mut c, "producer.id.expiration.ms=0\n").unwrap_err().contains("producer.id.expiration.ms=0"));
    }

    #[test]
    fn listeners_list_with_sasl() {
        let mut c = cfg();
        apply(&mut c, "listeners=PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9093\n").unwrap();
        let l: Vec<String> = c.listeners.iter().map(|l| l.to_string()).collect();
        assert_eq!(l, ["PLAINTEXT://127.0.0.1:9092", "SASL_PLAINTEXT://127.0.0.1:9093"]);
    }

    #[test]
    fn refuses_with_line_and_key() {
        for (text, want) in [
            ("num.partitions=2\nzookeeper.connect=x\n", "line 2: unknown or unsupported key zookeeper.connect"),
            ("log.cleanup.policy=shred\n", "compact, delete"),
            ("log.segment.bytes=4294967296\n", "log.segment.bytes"),
            ("node.id=3\n", "node 0"),
            ("num.partitions=x\n", "num.partitions=x"),
            ("listeners=PLAINTEXT://localhost:9092\n", "IP address"),
            ("listeners=PLAINTEXT://127.0.0.1:1,SASL_PLAINTEXT://localhost:2\n", "IP address"),
            ("listeners=GOPHER://127.0.0.1:1\n", "unknown security protocol"),
            ("message.max.bytes=1\nmessage.max.bytes=2\n", "twice"),
            ("just a line\n", "not key=value"),
        ] {
            let e = apply(&mut cfg(), text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
