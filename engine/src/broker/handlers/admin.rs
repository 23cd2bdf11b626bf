//! Admin APIs served by the broker itself: DescribeConfigs (key 32), DescribeLogDirs (key 35),
//! CreatePartitions (key 37) and DescribeCluster (key 60). (DeleteGroups and OffsetDelete belong to the group
//! coordinator.)
//!
//! DescribeConfigs answers the configuration the broker really applies — read from the
//! partition's own [`LogConfig`] and the [`super::super::BrokerConfig`] — never a value it does
//! not honour. Sources: DEFAULT_CONFIG when a value is the built-in default,
//! STATIC_BROKER_CONFIG when the broker was started with another value, TOPIC_CONFIG when a
//! topic's value differs from the broker's. Every entry is read-only: this broker serves no
//! AlterConfigs / IncrementalAlterConfigs.

use std::collections::HashSet;

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{is_hidden_topic, is_internal_topic, topic_error_code, Handled};
use crate::broker::{Reply, Shared};
use crate::log::{LogConfig, TopicError};
use crate::wire::{self, error};

/// Kafka error code not in `wire::error`.
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;

/// Resource types (Kafka's `ConfigResource.Type`).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Config sources (Kafka's `DescribeConfigsResponse.ConfigSource`).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Config types (Kafka's `ConfigDef.Type` ids in DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// This broker's node id (a single-node cluster).
const NODE_ID: &str = "0";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// One configuration entry: Kafka's key, the value applied, its type, and the broker-level key
/// it derives from (a topic entry's synonym) with that key's source.
struct Entry {
    name: &'static str,
    value: String,
    ty: i8,
    source: i8,
    synonym: Option<(&'static str, String, i8)>,
}

fn opt_ms(v: Option<u64>) -> String {
    v.map_or("-1".to_string(), |v| v.to_string())
}

/// `log.roll.ms`/`segment.ms`: without an age limit a segment rolls on size only, which Kafka
/// expresses as Long.MAX_VALUE (its largest accepted value).
fn roll_ms(v: Option<u64>) -> String {
    v.map_or(i64::MAX.to_string(), |v| v.to_string())
}

/// The log-level entries (topic key, broker key, type, value) of a configuration.
/// `message_max` is the broker's Produce limit (`BrokerConfig::message_max_bytes`): a batch
/// must pass it and then the log's `batch_bytes_max`, so the smaller one applies.
fn log_values(c: &LogConfig, message_max: usize) -> Vec<(&'static str, &'static str, i8, String)> {
    vec![
        ("cleanup.policy", "log.cleanup.policy", TYPE_LIST, "delete".to_string()),
        ("retention.ms", "log.retention.ms", TYPE_LONG, opt_ms(c.retention_ms)),
        ("retention.bytes", "log.retention.bytes", TYPE_LONG, opt_ms(c.retention_bytes_max)),
        ("segment.bytes", "log.segment.bytes", TYPE_INT, c.segment_bytes_max.to_string()),
        ("segment.ms", "log.roll.ms", TYPE_LONG, roll_ms(c.segment_age_max_ms)),
        ("index.interval.bytes", "log.index.interval.bytes", TYPE_INT, c.index_interval_bytes.to_string()),
        ("max.message.bytes", "message.max.bytes", TYPE_INT, c.batch_bytes_max.min(message_max).to_string()),
        // Single node: acks=all waits for the one replica.
        ("min.insync.replicas", "min.insync.replicas", TYPE_INT, "1".to_string()),
        // Batches are stored as the producer sent them: its compression, its timestamps.
        ("compression.type", "compression.type", TYPE_STRING, "producer".to_string()),
        ("message.timestamp.type", "log.message.timestamp.type", TYPE_STRING, "CreateTime".to_string()),
    ]
}

/// The broker's built-in defaults (what it runs with when started without options).
fn builtin(cfg: &crate::broker::BrokerConfig) -> crate::broker::BrokerConfig {
    crate::broker::BrokerConfig::new(cfg.data_dir.clone(), cfg.log.durability)
}

fn topic_entries(shared: &Shared, topic_cfg: &LogConfig) -> Vec<Entry> {
    let cfg = &shared.cfg;
    let d = builtin(cfg);
    let builtin = log_values(&d.log, d.message_max_bytes);
    let broker = log_values(shared.logs.config(), cfg.message_max_bytes);
    log_values(topic_cfg, cfg.message_max_bytes)
        .into_iter()
        .zip(broker)
        .zip(builtin)
        .map(|(((name, bname, ty, value), (_, _, _, bvalue)), (_, _, _, dvalue))| {
            let broker_source = if bvalue == dvalue { SOURCE_DEFAULT } else { SOURCE_STATIC_BROKER };
            let source = if value != bvalue { SOURCE_TOPIC } else { broker_source };
            Entry { name, value, ty, source, synonym: Some((bname, bvalue, broker_source)) }
        })
        .collect()
}

fn broker_entries(shared: &Shared) -> Vec<Entry> {
    let cfg = &shared.cfg;
    let builtin = builtin(cfg);
    let builtin_log = log_values(&builtin.log, builtin.message_max_bytes);
    let mut out: Vec<Entry> = log_values(shared.logs.config(), cfg.message_max_bytes)
        .into_iter()
        .zip(builtin_log)
        .map(|((_, bname, ty, value), (_, _, _, dvalue))| {
            let source = if value == dvalue { SOURCE_DEFAULT } else { SOURCE_STATIC_BROKER };
            Entry { name: bname, value, ty, source, synonym: None }
        })
        .collect();
    let mut add = |name, ty, value: String, default: String| {
        let source = if value == default { SOURCE_DEFAULT } else { SOURCE_STATIC_BROKER };
        out.push(Entry { name, value, ty, source, synonym: None });
    };
    add("node.id", TYPE_INT, NODE_ID.to_string(), NODE_ID.to_string());
    add("broker.id", TYPE_INT, NODE_ID.to_string(), NODE_ID.to_string());
    add("num.partitions", TYPE_INT, cfg.default_partitions.to_string(), builtin.default_partitions.to_string());
    add(
        "auto.create.topics.enable",
        TYPE_BOOLEAN,
        cfg.auto_create_topics.to_string(),
        builtin.auto_create_topics.to_string(),
    );
    add("socket.request.max.bytes", TYPE_INT, cfg.frame_bytes_max.to_string(), builtin.frame_bytes_max.to_string());
    add(
        "connections.max.idle.ms",
        TYPE_LONG,
        cfg.connection_idle_ms.to_string(),
        builtin.connection_idle_ms.to_string(),
    );
    add("max.connections", TYPE_INT, cfg.connections_max.to_string(), builtin.connections_max.to_string());
    add(
        "max.connections.per.ip",
        TYPE_INT,
        cfg.connections_per_ip_max.to_string(),
        builtin.connections_per_ip_max.to_string(),
    );
    add("default.replication.factor", TYPE_INT, "1".to_string(), "1".to_string());
    add("offsets.topic.num.partitions", TYPE_INT, "1".to_string(), "1".to_string());
    // The data directory is always given at start.
    out.push(Entry {
        name: "log.dirs",
        value: cfg.data_dir.display().to_string(),
        ty: TYPE_STRING,
        source: SOURCE_STATIC_BROKER,
        synonym: None,
    });
    out
}

fn result_entries(entries: Vec<Entry>, keys: &Option<Vec<StrBytes>>, synonyms: bool) -> Vec<DescribeConfigsResourceResult> {
    let wanted: Option<HashSet<&str>> = keys.as_ref().map(|ks| ks.iter().map(|k| k.as_str()).collect());
    entries
        .into_iter()
        .filter(|e| wanted.as_ref().is_none_or(|w| w.contains(e.name)))
        .map(|e| {
            let mut r = DescribeConfigsResourceResult::default();
            r.name = s(e.name);
            r.value = Some(s(&e.value));
            r.read_only = true;
            r.config_source = e.source;
            r.is_sensitive = false;
            r.config_type = e.ty;
            if synonyms {
                // In precedence order, as Kafka: the topic's own value if it has one, then the
                // broker-level key it otherwise derives from.
                let syn = |name: &str, value: &str, source| {
                    let mut y = DescribeConfigsSynonym::default();
                    y.name = s(name);
                    y.value = Some(s(value));
                    y.source = source;
                    y
                };
                match &e.synonym {
                    Some((bname, bvalue, bsource)) => {
                        if e.source == SOURCE_TOPIC {
                            r.synonyms.push(syn(e.name, &e.value, e.source));
                        }
                        r.synonyms.push(syn(bname, bvalue, *bsource));
                    }
                    None => r.synonyms.push(syn(e.name, &e.value, e.source)),
                }
            }
            r
        })
        .collect()
}

pub(super) fn describe_configs(shared: &Shared, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: DescribeConfigsRequest = wire::decode_body(&mut body, version)?;
    let mut results = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let name = res.resource_name.as_str();
        let outcome: Result<Vec<Entry>, (i16, String)> = match res.resource_type {
            RESOURCE_TOPIC if is_hidden_topic(name) => {
                Err((error::UNKNOWN_TOPIC_OR_PARTITION, format!("topic {name:?} does not exist")))
            }
            RESOURCE_TOPIC => match shared.logs.topic(name).and_then(|t| t.first().cloned()) {
                Some(p) => Ok(topic_entries(shared, p.config())),
                None => Err((error::UNKNOWN_TOPIC_OR_PARTITION, format!("topic {name:?} does not exist"))),
            },
            RESOURCE_BROKER if name.is_empty() || name == NODE_ID => Ok(broker_entries(shared)),
            RESOURCE_BROKER => Err((
                error::INVALID_REQUEST,
                format!("unexpected broker id, expected {NODE_ID} or empty string, but received {name}"),
            )),
            t => Err((error::INVALID_REQUEST, format!("resource type {t} is not supported by this broker"))),
        };
        match outcome {
            Ok(entries) => r.configs = result_entries(entries, &res.configuration_keys, req.include_synonyms),
            Err((code, msg)) => {
                r.error_code = code;
                r.error_message = Some(s(&msg));
            }
        }
        results.push(r);
    }
    let resp = DescribeConfigsResponse::default().with_results(results);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::DescribeConfigs, version, &resp)))
}

pub(super) fn create_partitions(shared: &Shared, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: CreatePartitionsRequest = wire::decode_body(&mut body, version)?;
    let mut seen: HashSet<String> = HashSet::new();
    let dups: HashSet<String> =
        req.topics.iter().map(|t| t.name.0.to_string()).filter(|n| !seen.insert(n.clone())).collect();
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome = check_create_partitions(shared, &name, t.count, t.assignments.as_deref(), &dups).and_then(|()| {
            if req.validate_only {
                return Ok(());
            }
            shared.logs.add_partitions(&name, t.count).map(|_| ()).map_err(|e| match e {
                // Lost a race with another change of the topic: the same checks' answers.
                TopicError::InvalidPartitions(_) => {
                    (error::INVALID_PARTITIONS, format!("topic {name:?} already has {} or more partitions", t.count))
                }
                e => (topic_error_code(&e), e.to_string()),
            })
        });
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err((code, msg)) = outcome {
            r = r.with_error_code(code).with_error_message(Some(s(&msg)));
        }
        results.push(r);
    }
    let resp = CreatePartitionsResponse::default().with_results(results);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::CreatePartitions, version, &resp)))
}

/// Kafka's checks of one CreatePartitions topic, with its messages.
fn check_create_partitions(
    shared: &Shared,
    name: &str,
    count: i32,
    assignments: Option<&[kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment]>,
    dups: &HashSet<String>,
) -> Result<(), (i16, String)> {
    if dups.contains(name) {
        return Err((error::INVALID_REQUEST, "Duplicate topic in request.".to_string()));
    }
    if is_hidden_topic(name) {
        return Err((error::UNKNOWN_TOPIC_OR_PARTITION, format!("topic {name:?} does not exist")));
    }
    if is_internal_topic(name) {
        // As DeleteTopics: nobody may change the broker's own topics (its code reads partition 0).
        return Err((error::TOPIC_AUTHORIZATION_FAILED, format!("internal topic {name} cannot get partitions")));
    }
    let Some(topic) = shared.logs.topic(name) else {
        return Err((error::UNKNOWN_TOPIC_OR_PARTITION, format!("topic {name:?} does not exist")));
    };
    let current = topic.len() as i32;
    if count < current {
        return Err((
            error::INVALID_PARTITIONS,
            format!("Topic currently has {current} partitions, which is higher than the requested {count}."),
        ));
    }
    if count == current {
        return Err((error::INVALID_PARTITIONS, format!("Topic already has {current} partitions.")));
    }
    if count > shared.cfg.partitions_per_topic_max {
        return Err((
            error::INVALID_PARTITIONS,
            format!("{count} partitions exceed this broker's limit of {}", shared.cfg.partitions_per_topic_max),
        ));
    }
    if let Some(a) = assignments {
        let added = (count - current) as usize;
        if a.len() != added {
            return Err((
                INVALID_REPLICA_ASSIGNMENT,
                format!("Increasing the number of partitions by {added} but {} assignments provided.", a.len()),
            ));
        }
        if a.iter().any(|x| x.broker_ids.len() != 1 || x.broker_ids[0].0 != 0) {
            return Err((INVALID_REPLICA_ASSIGNMENT, "this single-node cluster has only broker 0".to_string()));
        }
    }
    Ok(())
}

/// Kafka error codes of DescribeCluster v1+ (KIP-919).
const MISMATCHED_ENDPOINT_TYPE: i16 = 114;
const UNSUPPORTED_ENDPOINT_TYPE: i16 = 115;

/// DescribeCluster: this single node (id 0, at the address the client connected to, as
/// Metadata advertises it), which is also the controller.
pub(super) fn describe_cluster(shared: &Shared, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: DescribeClusterRequest = wire::decode_body(&mut body, version)?;
    let mut resp = DescribeClusterResponse::default();
    resp.endpoint_type = req.endpoint_type;
    match req.endpoint_type {
        1 => {
            let local = crate::broker::current_connection_local_addr();
            let host = match local {
                Some(a) if !a.ip().is_unspecified() => a.ip().to_string(),
                _ => "127.0.0.1".to_string(),
            };
            let port = local.map_or(shared.cfg.listen.port(), |a| a.port()) as i32;
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(0);
            b.host = s(&host);
            b.port = port;
            resp.brokers.push(b);
            // The cluster id Metadata reports.
            resp.cluster_id = StrBytes::from_static_str("zero-copy-log");
            resp.controller_id = BrokerId(0);
        }
        // As a Kafka broker listener asked for controllers.
        2 => {
            resp.error_code = MISMATCHED_ENDPOINT_TYPE;
            resp.error_message = Some(s("this broker has no separate controller endpoint; ask for brokers (endpoint type 1)"));
        }
        t => {
            resp.error_code = UNSUPPORTED_ENDPOINT_TYPE;
            resp.error_message = Some(s(&format!("unsupported endpoint type {t}")));
        }
    }
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::DescribeCluster, version, &resp)))
}

/// DescribeLogDirs: the one data directory with each partition's size (the bytes of its
/// segments). Every requested topic that exists (all topics but the hidden `__producer_ids`
/// when none is named); unknown topics and partitions are left out, as Kafka does. Disk total
/// and usable bytes (v4) are answered -1 (unknown): the broker does not query the filesystem.
pub(super) fn describe_log_dirs(shared: &Shared, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: DescribeLogDirsRequest = wire::decode_body(&mut body, version)?;
    let wanted: Vec<(String, Option<Vec<i32>>)> = match req.topics {
        None => shared.logs.topic_names().into_iter().filter(|n| !is_hidden_topic(n)).map(|n| (n, None)).collect(),
        Some(ts) => ts.into_iter().map(|t| (t.topic.0.to_string(), Some(t.partitions))).collect(),
    };
    let mut dir = DescribeLogDirsResult::default();
    dir.log_dir = s(&shared.logs.dir().display().to_string());
    dir.total_bytes = -1;
    dir.usable_bytes = -1;
    for (name, parts) in wanted {
        if is_hidden_topic(&name) {
            continue;
        }
        let Some(topic) = shared.logs.topic(&name) else { continue };
        let mut t = DescribeLogDirsTopic::default();
        t.name = TopicName(s(&name));
        for (i, p) in topic.iter().enumerate() {
            let index = i as i32;
            if parts.as_ref().is_some_and(|ps| !ps.contains(&index)) {
                continue;
            }
            let mut r = DescribeLogDirsPartition::default();
            r.partition_index = index;
            r.partition_size = i64::try_from(p.size_bytes()).unwrap_or(i64::MAX);
            r.offset_lag = 0;
            t.partitions.push(r);
        }
        if !t.partitions.is_empty() {
            dir.topics.push(t);
        }
    }
    let resp = DescribeLogDirsResponse::default().with_results(vec![dir]);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::DescribeLogDirs, version, &resp)))
}
