//! Topics and identity of the broker a run drives.
//!
//! * Topics on an external cluster: by default each run creates its own, named
//!   `<prefix>-<run id>-<workload>-<n>` (prefix `loadgen`, run id = start time + process id),
//!   with the workload's partitions and `--replication-factor` (default: the broker's default),
//!   and deletes them when the run ends (also when it fails) unless `--keep-topics`. `--topic
//!   A,B` reuses existing topics instead: they are neither created nor deleted. The embedded
//!   engine keeps the workload's fixed names (its data directory is temporary anyway).
//! * Identity ([`identify`]): what the target says about itself — cluster id, controller,
//!   brokers, the API versions it advertised — recorded as `target.identity`.

use std::net::SocketAddr;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

use crate::client::Conn;
use crate::results::{ApiVersionRange, TargetIdentity};

/// How a run gets its topics on an external cluster (`loadgen run` flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TopicOptions {
    /// External cluster: reuse these existing topics (comma-separated, one per workload topic);
    /// they are neither created nor deleted. Default: per-run topics, created and deleted.
    #[arg(long, value_delimiter = ',', value_name = "TOPIC")]
    pub topic: Vec<String>,
    /// External cluster: name prefix of the per-run topics.
    #[arg(long, default_value = "loadgen", value_name = "PREFIX")]
    pub topic_prefix: String,
    /// External cluster: replication factor of the per-run topics (-1 = the broker's default).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true, value_name = "N")]
    pub replication_factor: i16,
    /// External cluster: do not delete the per-run topics at the end.
    #[arg(long)]
    pub keep_topics: bool,
}

/// The topics of one run on an external cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicPlan {
    pub names: Vec<String>,
    /// Some(rf): create them with this replication factor; None: they must exist.
    pub create_with_rf: Option<i16>,
    /// Delete them at the end.
    pub delete: bool,
}

/// A run id unique enough for topic names: start time (s, hex) and process id.
pub fn run_id() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{secs:x}-{}", std::process::id())
}

/// The topics a run uses on an external cluster. Err for a `--topic` list that does not match
/// the workload's topic count, or a bad prefix / replication factor.
pub fn plan(opts: &TopicOptions, workload: &str, topics: u32, run_id: &str) -> Result<TopicPlan, String> {
    if !opts.topic.is_empty() {
        if opts.topic.len() != topics as usize {
            return Err(format!("--topic names {} topic(s), the workload uses {topics}", opts.topic.len()));
        }
        if let Some(bad) = opts.topic.iter().find(|t| t.is_empty() || crate::workload::sanitize(t) != **t || t.len() > 249) {
            return Err(format!("--topic {bad:?}: topic names are 1-249 characters of [a-zA-Z0-9._-]"));
        }
        return Ok(TopicPlan { names: opts.topic.clone(), create_with_rf: None, delete: false });
    }
    if opts.replication_factor == 0 || opts.replication_factor < -1 {
        return Err(format!("--replication-factor {}: want -1 (broker default) or >= 1", opts.replication_factor));
    }
    let prefix = crate::workload::sanitize(&opts.topic_prefix);
    let names: Vec<String> = (0..topics).map(|t| format!("{prefix}-{run_id}-{}-{t}", crate::workload::sanitize(workload))).collect();
    if names.iter().any(|n| n.len() > 249) {
        return Err("per-run topic names would exceed 249 characters: shorten --topic-prefix".into());
    }
    Ok(TopicPlan { names, create_with_rf: Some(opts.replication_factor), delete: !opts.keep_topics })
}

/// Deletes a run's topics when dropped (the end of the run, or a failure after creating them).
pub struct TopicCleanup {
    connector: crate::client::Connector,
    addr: SocketAddr,
    names: Vec<String>,
    quiet: bool,
}

impl TopicCleanup {
    pub fn new(connector: crate::client::Connector, addr: SocketAddr, names: Vec<String>, quiet: bool) -> TopicCleanup {
        TopicCleanup { connector, addr, names, quiet }
    }
}

impl Drop for TopicCleanup {
    fn drop(&mut self) {
        // Bounded: a stalled broker must not hold the end of the run for long.
        let r = self.connector.connect_with_read_timeout(self.addr, Duration::from_secs(3), Duration::from_secs(5)).and_then(|mut c| c.delete_topics(&self.names));
        match r {
            Ok(()) if !self.quiet => eprintln!("deleted topics {}", self.names.join(", ")),
            Ok(()) => {}
            // Never silent: the user has topics to clean up.
            Err(e) => eprintln!("warning: topics {} were left on {}: {e}", self.names.join(", "), self.addr),
        }
    }
}

/// What the broker at `conn` says about itself and its cluster.
pub fn identify(conn: &mut Conn) -> Result<TargetIdentity, String> {
    let md = conn.metadata(Some(&[]), false).map_err(|e| format!("identify broker {}: {e}", conn.addr))?;
    let mut brokers: Vec<(i32, String)> = md
        .brokers
        .iter()
        .map(|b| {
            let rack = b.rack.as_ref().map(|r| format!(" rack {r}")).unwrap_or_default();
            (b.node_id.0, format!("{}@{}:{}{rack}", b.node_id.0, b.host, b.port))
        })
        .collect();
    brokers.sort();
    let api_versions = conn
        .advertised()
        .into_iter()
        .map(|(key, min, max)| ApiVersionRange {
            key,
            name: ApiKey::try_from(key).map(|k| format!("{k:?}")).unwrap_or_else(|_| format!("unknown({key})")),
            min,
            max,
        })
        .collect();
    Ok(TargetIdentity {
        cluster_id: md.cluster_id.as_ref().map(|c| c.to_string()),
        controller_id: md.controller_id.0,
        broker_ids: brokers.iter().map(|(id, _)| *id).collect(),
        broker_count: brokers.len() as u32,
        brokers: brokers.into_iter().map(|(_, s)| s).collect(),
        api_versions,
        software: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_run_topics_by_default_existing_ones_with_topic() {
        let o = TopicOptions { topic_prefix: "loadgen".into(), replication_factor: -1, ..Default::default() };
        let p = plan(&o, "smoke", 2, "abc-1").unwrap();
        assert_eq!(p.names, vec!["loadgen-abc-1-smoke-0", "loadgen-abc-1-smoke-1"]);
        assert_eq!((p.create_with_rf, p.delete), (Some(-1), true));
        let keep = TopicOptions { keep_topics: true, replication_factor: 3, ..o.clone() };
        assert_eq!(plan(&keep, "smoke", 1, "x").unwrap().create_with_rf, Some(3));
        assert!(!plan(&keep, "smoke", 1, "x").unwrap().delete);
        let reuse = TopicOptions { topic: vec!["mine".into()], ..o.clone() };
        assert_eq!(plan(&reuse, "smoke", 1, "x").unwrap(), TopicPlan { names: vec!["mine".into()], create_with_rf: None, delete: false });
        assert!(plan(&reuse, "smoke", 2, "x").unwrap_err().contains("workload uses 2"));
        assert!(plan(&TopicOptions { topic: vec!["a b".into()], ..o.clone() }, "smoke", 1, "x").is_err());
        assert!(plan(&TopicOptions { replication_factor: 0, ..o }, "smoke", 1, "x").is_err());
        assert_ne!(run_id(), "");
    }
}
