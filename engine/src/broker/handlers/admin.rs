//! Admin APIs served by the broker itself: DescribeConfigs (key 32), AlterConfigs (key 33),
//! DescribeLogDirs (key 35), CreatePartitions (key 37), IncrementalAlterConfigs (key 44) and
//! DescribeCluster (key 60). (DeleteGroups and OffsetDelete belong to the group coordinator.)
//!
//! DescribeConfigs answers the configuration the broker really applies — the topic's overrides
//! ([`TopicConfig`]) over the broker's [`LogConfig`] and [`super::super::BrokerConfig`] — never
//! a value it does not honour. Sources: DYNAMIC_TOPIC_CONFIG for a topic's override,
//! STATIC_BROKER_CONFIG when the broker was started with a value other than its built-in one
//! (command line or `--config` file), DEFAULT_CONFIG otherwise. Topic keys are altered by
//! AlterConfigs / IncrementalAlterConfigs (persisted, then applied to the running partitions);
//! broker keys are read-only (static).

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
use crate::broker::auth::{codes, Authz, Operation, ResourceType};
use crate::broker::{ConnCtx, Reply, Shared};
use crate::log::{topic_config, LogConfig, TopicConfig, TopicError};
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

/// This broker's node id (a single-node cluster).
const NODE_ID: &str = "0";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// One configuration entry: Kafka's key, the value applied, its type, whether it can be
/// altered, its source, and its synonyms in precedence order (Kafka's: the topic's own value,
/// then the static broker key, then the default).
struct Entry {
    name: &'static str,
    value: String,
    ty: i8,
    read_only: bool,
    source: i8,
    synonyms: Vec<(&'static str, String, i8)>,
}

/// A broker-level entry: `value` is what the broker runs with, `default` its built-in value.
fn broker_entry(name: &'static str, ty: i8, value: String, default: String, read_only: bool) -> Entry {
    let mut synonyms = Vec::new();
    let source = if value == default {
        SOURCE_DEFAULT
    } else {
        synonyms.push((name, value.clone(), SOURCE_STATIC_BROKER));
        SOURCE_STATIC_BROKER
    };
    synonyms.push((name, default, SOURCE_DEFAULT));
    Entry { name, value, ty, read_only, source, synonyms }
}

fn opt_ms(v: Option<u64>) -> String {
    v.map_or("-1".to_string(), |v| v.to_string())
}

/// The broker-level value of a topic key in a log configuration (its default for topics).
/// `log.roll.ms`/`segment.ms`: without an age limit a segment rolls on size only, which Kafka
/// expresses as Long.MAX_VALUE (its largest accepted value).
fn log_value(key: &str, c: &LogConfig) -> String {
    match key {
        "cleanup.policy" => match (c.compact, c.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
        .to_string(),
        "delete.retention.ms" => c.delete_retention_ms.to_string(),
        "retention.ms" => opt_ms(c.retention_ms),
        "retention.bytes" => opt_ms(c.retention_bytes_max),
        "segment.bytes" => c.segment_bytes_max.to_string(),
        "segment.ms" => c.segment_age_max_ms.map_or(i64::MAX.to_string(), |v| v.to_string()),
        "index.interval.bytes" => c.index_interval_bytes.to_string(),
        "max.message.bytes" => c.message_max_bytes.to_string(),
        "min.insync.replicas" => c.min_insync_replicas.to_string(),
        // Batches are stored as the producer sent them: its compression.
        "compression.type" => "producer".to_string(),
        "message.timestamp.type" => if c.log_append_time { "LogAppendTime" } else { "CreateTime" }.to_string(),
        k => unreachable!("topic_config::KEYS has no {k}"),
    }
}

/// The broker's built-in defaults (what it runs with when started without options).
fn builtin(cfg: &crate::broker::BrokerConfig) -> crate::broker::BrokerConfig {
    let mut b = crate::broker::BrokerConfig::new(cfg.data_dir.clone(), cfg.log.durability);
    b.log.message_max_bytes = b.message_max_bytes;
    b
}

/// CreateTopics v5+: the created topic's configuration, as DescribeConfigs would answer it.
pub(super) fn created_topic_configs(
    shared: &Shared,
    overrides: &TopicConfig,
) -> Vec<kafka_protocol::messages::create_topics_response::CreatableTopicConfigs> {
    topic_entries(shared, overrides)
        .into_iter()
        .map(|e| {
            let mut c = kafka_protocol::messages::create_topics_response::CreatableTopicConfigs::default();
            c.name = s(e.name);
            c.value = Some(s(&e.value));
            c.read_only = e.read_only;
            c.config_source = e.source;
            c.is_sensitive = false;
            c
        })
        .collect()
}

/// A topic's entries: its override (DYNAMIC_TOPIC_CONFIG) where it has one, else the broker's.
fn topic_entries(shared: &Shared, overrides: &TopicConfig) -> Vec<Entry> {
    let d = builtin(&shared.cfg);
    topic_config::KEYS
        .iter()
        .map(|k| {
            let b = broker_entry(k.broker_key, k.ty as i8, log_value(k.name, shared.logs.config()), log_value(k.name, &d.log), true);
            let mut e = Entry { name: k.name, read_only: !k.settable, ..b };
            if let Some(v) = overrides.get(k.name) {
                e.value = v.to_string();
                e.source = SOURCE_TOPIC;
                e.synonyms.insert(0, (k.name, e.value.clone(), SOURCE_TOPIC));
            }
            e
        })
        .collect()
}

/// The broker's entries: read-only (its configuration is static: the command line and the
/// `--config` file).
fn broker_entries(shared: &Shared) -> Vec<Entry> {
    let cfg = &shared.cfg;
    let d = builtin(cfg);
    let mut out: Vec<Entry> = topic_config::KEYS
        .iter()
        .map(|k| broker_entry(k.broker_key, k.ty as i8, log_value(k.name, shared.logs.config()), log_value(k.name, &d.log), true))
        .collect();
    let mut add = |name, ty, value: String, default: String| out.push(broker_entry(name, ty, value, default, true));
    add("node.id", TYPE_INT, NODE_ID.to_string(), NODE_ID.to_string());
    add("broker.id", TYPE_INT, NODE_ID.to_string(), NODE_ID.to_string());
    add("num.partitions", TYPE_INT, cfg.default_partitions.to_string(), d.default_partitions.to_string());
    add("auto.create.topics.enable", TYPE_BOOLEAN, cfg.auto_create_topics.to_string(), d.auto_create_topics.to_string());
    add("socket.request.max.bytes", TYPE_INT, cfg.frame_bytes_max.to_string(), d.frame_bytes_max.to_string());
    add("connections.max.idle.ms", TYPE_LONG, cfg.connection_idle_ms.to_string(), d.connection_idle_ms.to_string());
    add("max.connections", TYPE_INT, cfg.connections_max.to_string(), d.connections_max.to_string());
    add("max.connections.per.ip", TYPE_INT, cfg.connections_per_ip_max.to_string(), d.connections_per_ip_max.to_string());
    add("default.replication.factor", TYPE_INT, "1".to_string(), "1".to_string());
    add("offsets.topic.num.partitions", TYPE_INT, "1".to_string(), "1".to_string());
    // The data directory is always given at start.
    out.push(Entry {
        name: "log.dirs",
        value: cfg.data_dir.display().to_string(),
        ty: TYPE_STRING,
        read_only: true,
        source: SOURCE_STATIC_BROKER,
        synonyms: vec![("log.dirs", cfg.data_dir.display().to_string(), SOURCE_STATIC_BROKER)],
    });
    out
}

fn result_entries(entries: Vec<Entry>, keys: &Option<Vec<StrBytes>>, synonyms: bool) -> Vec<DescribeConfigsResourceResult> {
    // Null or empty: every key (as Kafka's ConfigHelper).
    let wanted: Option<HashSet<&str>> =
        keys.as_ref().filter(|ks| !ks.is_empty()).map(|ks| ks.iter().map(|k| k.as_str()).collect());
    entries
        .into_iter()
        .filter(|e| wanted.as_ref().is_none_or(|w| w.contains(e.name)))
        .map(|e| {
            let mut r = DescribeConfigsResourceResult::default();
            r.name = s(e.name);
            r.value = Some(s(&e.value));
            r.read_only = e.read_only;
            r.config_source = e.source;
            r.is_sensitive = false;
            r.config_type = e.ty;
            if synonyms {
                for (name, value, source) in &e.synonyms {
                    let mut y = DescribeConfigsSynonym::default();
                    y.name = s(name);
                    y.value = Some(s(value));
                    y.source = *source;
                    r.synonyms.push(y);
                }
            }
            r
        })
        .collect()
}

pub(super) fn describe_configs(shared: &Shared, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: DescribeConfigsRequest = wire::decode_body(&mut body, version)?;
    let mut results = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let name = res.resource_name.as_str();
        let outcome: Result<Vec<Entry>, (i16, String)> = match res.resource_type {
            RESOURCE_TOPIC if !az.allows(Operation::DescribeConfigs, ResourceType::Topic, name) => {
                Err((codes::TOPIC_AUTHORIZATION_FAILED, "Authorization failed.".into()))
            }
            RESOURCE_BROKER if !az.allows_cluster(Operation::DescribeConfigs) => {
                Err((codes::CLUSTER_AUTHORIZATION_FAILED, "Authorization failed.".into()))
            }
            RESOURCE_TOPIC if is_hidden_topic(name) => {
                Err((error::UNKNOWN_TOPIC_OR_PARTITION, format!("topic {name:?} does not exist")))
            }
            RESOURCE_TOPIC => match shared.logs.topic(name).and_then(|t| t.first().cloned()) {
                Some(_) => Ok(topic_entries(shared, &shared.logs.topic_config(name))),
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

pub(super) fn create_partitions(shared: &Shared, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: CreatePartitionsRequest = wire::decode_body(&mut body, version)?;
    let mut seen: HashSet<String> = HashSet::new();
    let dups: HashSet<String> =
        req.topics.iter().map(|t| t.name.0.to_string()).filter(|n| !seen.insert(n.clone())).collect();
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let authorized = if az.allows(Operation::Alter, ResourceType::Topic, &name) {
            Ok(())
        } else {
            Err((error::TOPIC_AUTHORIZATION_FAILED, "Authorization failed.".to_string()))
        };
        let outcome = authorized.and_then(|()| check_create_partitions(shared, &name, t.count, t.assignments.as_deref(), &dups)).and_then(|()| {
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
pub(super) fn describe_cluster(shared: &Shared, ctx: &ConnCtx, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: DescribeClusterRequest = wire::decode_body(&mut body, version)?;
    let mut resp = DescribeClusterResponse::default();
    resp.endpoint_type = req.endpoint_type;
    match req.endpoint_type {
        _ if !az.allows_cluster(Operation::Describe) => {
            resp.error_code = codes::CLUSTER_AUTHORIZATION_FAILED;
            resp.error_message = Some(s("Authorization failed."));
        }
        1 => {
            let local = ctx.advertised();
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
pub(super) fn describe_log_dirs(shared: &Shared, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    let req: DescribeLogDirsRequest = wire::decode_body(&mut body, version)?;
    if !az.allows_cluster(Operation::Describe) {
        // As Kafka: the error (v3+) and no directories.
        let resp = DescribeLogDirsResponse::default().with_error_code(codes::CLUSTER_AUTHORIZATION_FAILED);
        return Ok(Reply::Now(wire::encode_response(cid, ApiKey::DescribeLogDirs, version, &resp)));
    }
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

/// Kafka's IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Check one AlterConfigs / IncrementalAlterConfigs resource, compute the topic's new overrides
/// from its current ones with `change`, and (unless `validate_only`) persist and apply them.
fn alter_resource(
    shared: &Shared,
    az: &Authz,
    resource_type: i8,
    name: &str,
    keys: &[&str],
    validate_only: bool,
    change: impl FnOnce(TopicConfig) -> Result<TopicConfig, (i16, String)>,
) -> Result<(), (i16, String)> {
    let mut seen = HashSet::new();
    if let Some(k) = keys.iter().find(|k| !seen.insert(**k)) {
        return Err((error::INVALID_REQUEST, format!("Error due to duplicate config keys: {k}")));
    }
    match resource_type {
        RESOURCE_TOPIC if !az.allows(Operation::AlterConfigs, ResourceType::Topic, name) => {
            return Err((codes::TOPIC_AUTHORIZATION_FAILED, "Authorization failed.".into()))
        }
        RESOURCE_BROKER if !az.allows_cluster(Operation::AlterConfigs) => {
            return Err((codes::CLUSTER_AUTHORIZATION_FAILED, "Authorization failed.".into()))
        }
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER if name.is_empty() || name == NODE_ID => {
            if keys.is_empty() {
                return Ok(());
            }
            return Err((
                error::INVALID_REQUEST,
                format!(
                    "Cannot update these configs dynamically: {}: this broker's configuration is static (its command line \
                     and --config file); topic configurations can be altered",
                    keys.join(", ")
                ),
            ));
        }
        RESOURCE_BROKER => {
            return Err((
                error::INVALID_REQUEST,
                format!("unexpected broker id, expected {NODE_ID} or empty string, but received {name}"),
            ))
        }
        t => return Err((error::INVALID_REQUEST, format!("resource type {t} is not supported by this broker"))),
    }
    if is_hidden_topic(name) || shared.logs.topic(name).is_none() {
        return Err((error::UNKNOWN_TOPIC_OR_PARTITION, format!("topic {name:?} does not exist")));
    }
    if is_internal_topic(name) {
        return Err((error::TOPIC_AUTHORIZATION_FAILED, format!("the configuration of internal topic {name} is the broker's")));
    }
    let new = change(shared.logs.topic_config(name))?;
    if validate_only {
        return Ok(());
    }
    shared.logs.alter_topic_config(name, new).map_err(|e| (topic_error_code(&e), e.to_string()))
}

fn invalid(e: crate::log::ConfigError) -> (i16, String) {
    (error::INVALID_CONFIG, e.to_string())
}

/// AlterConfigs (legacy): a topic's overrides are replaced by the request's whole set (keys not
/// named return to the broker's defaults), as Kafka does.
pub(super) fn alter_configs(shared: &Shared, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let req: AlterConfigsRequest = wire::decode_body(&mut body, version)?;
    let max = shared.logs.config().batch_bytes_max;
    let mut out = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let name = res.resource_name.to_string();
        let keys: Vec<&str> = res.configs.iter().map(|c| c.name.as_str()).collect();
        let outcome = alter_resource(shared, az, res.resource_type, &name, &keys, req.validate_only, |_| {
            // A null value sets nothing (the key keeps the broker's default).
            let pairs = res.configs.iter().filter_map(|c| c.value.as_ref().map(|v| (c.name.as_str(), v.as_str())));
            TopicConfig::from_pairs(pairs, max).map_err(invalid)
        });
        let mut r = AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        if let Err((code, msg)) = outcome {
            r.error_code = code;
            r.error_message = Some(s(&msg));
        }
        out.push(r);
    }
    let resp = AlterConfigsResponse::default().with_responses(out);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::AlterConfigs, version, &resp)))
}

/// IncrementalAlterConfigs: SET and DELETE any topic key; APPEND and SUBTRACT list keys
/// (`cleanup.policy`) starting from the value in force (the override, else the broker's).
pub(super) fn incremental_alter_configs(shared: &Shared, az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let req: IncrementalAlterConfigsRequest = wire::decode_body(&mut body, version)?;
    let max = shared.logs.config().batch_bytes_max;
    let mut out = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let name = res.resource_name.to_string();
        let keys: Vec<&str> = res.configs.iter().map(|c| c.name.as_str()).collect();
        let outcome = alter_resource(shared, az, res.resource_type, &name, &keys, req.validate_only, |mut cfg| {
            for c in &res.configs {
                let key = c.name.as_str();
                let value = c.value.as_ref().map(|v| v.as_str());
                match c.config_operation {
                    OP_SET => cfg.set(key, value.unwrap_or(""), max).map_err(invalid)?,
                    OP_DELETE => cfg.delete(key).map_err(invalid)?,
                    op @ (OP_APPEND | OP_SUBTRACT) => {
                        let verb = if op == OP_APPEND { "append" } else { "subtract" };
                        let Some(k) = topic_config::key(key) else {
                            return Err(invalid(crate::log::ConfigError(format!("Unknown topic config name: {key}"))));
                        };
                        if k.ty != topic_config::KeyType::List {
                            return Err((error::INVALID_CONFIG, format!("Config value {verb} is not allowed for config key: {key}")));
                        }
                        let current = cfg.get(key).map_or_else(|| log_value(key, shared.logs.config()), str::to_string);
                        let mut items: Vec<String> =
                            current.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).collect();
                        for v in value.unwrap_or("").split(',').map(str::trim).filter(|v| !v.is_empty()) {
                            if op == OP_APPEND && !items.iter().any(|i| i == v) {
                                items.push(v.to_string());
                            } else if op == OP_SUBTRACT {
                                items.retain(|i| i != v);
                            }
                        }
                        cfg.set(key, &items.join(","), max).map_err(invalid)?;
                    }
                    op => return Err((error::INVALID_REQUEST, format!("unknown config operation {op} for {key}"))),
                }
            }
            Ok(cfg)
        });
        let mut r = AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        if let Err((code, msg)) = outcome {
            r.error_code = code;
            r.error_message = Some(s(&msg));
        }
        out.push(r);
    }
    let resp = IncrementalAlterConfigsResponse::default().with_responses(out);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::IncrementalAlterConfigs, version, &resp)))
}
