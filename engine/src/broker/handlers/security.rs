//! The security APIs (CreateAcls / DescribeAcls / DeleteAcls, DescribeUserScramCredentials /
//! AlterUserScramCredentials) and the authorization of group-coordinator requests.
//!
//! Group requests go to `crate::groups` unchanged when no authorizer is configured. With one,
//! each is checked as Kafka's `KafkaApis` does before the coordinator sees it:
//! JoinGroup / SyncGroup / Heartbeat / LeaveGroup: Read group; OffsetCommit: Read group, Read
//! topic (denied topics are taken out of the request and answered TOPIC_AUTHORIZATION_FAILED);
//! OffsetFetch: Describe group, Describe topic (denied topics answered 29, or left out of an
//! all-topics fetch); FindCoordinator: Describe group / transactional id; DescribeGroups:
//! Describe group; ListGroups: Describe cluster, else only the groups the principal may
//! Describe; DeleteGroups: Delete group; OffsetDelete: Delete group, Read topic;
//! InitProducerId: Write transactional id, or IdempotentWrite on the cluster (or Write on some
//! topic, KIP-679); ConsumerGroupHeartbeat (KIP-848): Read group, Describe on each subscribed
//! topic name (else TOPIC_AUTHORIZATION_FAILED naming them; a regex subscription is resolved by
//! the coordinator over every topic: the topics' Read is still checked at Fetch);
//! ConsumerGroupDescribe: Describe group. A request filtered this way is re-encoded for the coordinator and its
//! response merged with the refused parts.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use super::Handled;
use crate::broker::auth::acl::{AclBinding, AclFilter, PatternType, Permission};
use crate::broker::auth::credentials::ScramChange;
use crate::broker::auth::scram::{ScramCredential, ScramHash, ITERATIONS_MAX, ITERATIONS_MIN};
use crate::broker::auth::{codes, Authz, Operation, ResourceType};
use crate::broker::{ConnCtx, Reply, Shared};
use crate::groups::Reply as GroupReply;
use crate::wire::{self, error};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

// ---------------------------------------------------------------------------------------------
// ACL APIs

fn binding_of(c: &kafka_protocol::messages::create_acls_request::AclCreation) -> Result<AclBinding, String> {
    let b = AclBinding {
        resource_type: ResourceType::from_code(c.resource_type).ok_or_else(|| format!("unknown resource type {}", c.resource_type))?,
        pattern: PatternType::from_code(c.resource_pattern_type)
            .ok_or_else(|| format!("unknown pattern type {}", c.resource_pattern_type))?,
        name: c.resource_name.to_string(),
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_code(c.operation).ok_or_else(|| format!("unknown operation {}", c.operation))?,
        permission: Permission::from_code(c.permission_type).ok_or_else(|| format!("unknown permission type {}", c.permission_type))?,
    };
    b.validate()?;
    Ok(b)
}

#[allow(clippy::too_many_arguments)]
fn filter_of(
    rt: i8,
    name: &Option<StrBytes>,
    pattern: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    op: i8,
    perm: i8,
) -> Result<AclFilter, String> {
    Ok(AclFilter {
        resource_type: ResourceType::from_code(rt).ok_or_else(|| format!("unknown resource type {rt}"))?,
        pattern: PatternType::from_code(pattern).ok_or_else(|| format!("unknown pattern type {pattern}"))?,
        name: name.as_ref().map(|n| n.to_string()),
        principal: principal.as_ref().map(|n| n.to_string()),
        host: host.as_ref().map(|n| n.to_string()),
        operation: Operation::from_code(op).ok_or_else(|| format!("unknown operation {op}"))?,
        permission: Permission::from_code(perm).ok_or_else(|| format!("unknown permission type {perm}"))?,
    })
}

/// (error, message) refusing an ACL API: no authorizer, or not allowed `op` on the cluster.
fn acl_api_refusal(az: &Authz, op: Operation) -> Option<(i16, String)> {
    if !az.enabled() {
        return Some((codes::SECURITY_DISABLED, "No Authorizer is configured on the broker (start it with --authorizer)".into()));
    }
    if !az.allows_cluster(op) {
        return Some((codes::CLUSTER_AUTHORIZATION_FAILED, "Authorization failed.".into()));
    }
    None
}

pub(super) fn create_acls(az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    use kafka_protocol::messages::create_acls_response::AclCreationResult;
    let req: CreateAclsRequest = wire::decode_body(&mut body, version)?;
    let mut results: Vec<Result<Option<AclBinding>, (i16, String)>> = Vec::with_capacity(req.creations.len());
    let refusal = acl_api_refusal(az, Operation::Alter);
    for c in &req.creations {
        results.push(match &refusal {
            Some(r) => Err(r.clone()),
            None => binding_of(c).map(Some).map_err(|m| (error::INVALID_REQUEST, m)),
        });
    }
    let valid: Vec<AclBinding> = results.iter().filter_map(|r| r.as_ref().ok().cloned().flatten()).collect();
    if !valid.is_empty() {
        let authorizer = az.security().authorizer.as_ref().expect("refused above without an authorizer");
        if let Err(e) = authorizer.create(&valid) {
            tracing::warn!("CreateAcls: {e}");
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err((error::KAFKA_STORAGE_ERROR, e.clone()));
            }
        } else {
            for b in &valid {
                tracing::info!(principal = az.principal(), acl = ?b, "ACL created");
            }
        }
    }
    let out = results
        .into_iter()
        .map(|r| match r {
            Ok(_) => AclCreationResult::default(),
            Err((code, msg)) => AclCreationResult::default().with_error_code(code).with_error_message(Some(s(&msg))),
        })
        .collect();
    let resp = CreateAclsResponse::default().with_results(out);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::CreateAcls, version, &resp)))
}

pub(super) fn describe_acls(az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
    let req: DescribeAclsRequest = wire::decode_body(&mut body, version)?;
    let mut resp = DescribeAclsResponse::default();
    let filter = filter_of(
        req.resource_type_filter,
        &req.resource_name_filter,
        req.pattern_type_filter,
        &req.principal_filter,
        &req.host_filter,
        req.operation,
        req.permission_type,
    );
    let outcome = match acl_api_refusal(az, Operation::Describe) {
        Some(r) => Err(r),
        None => filter.map_err(|m| (error::INVALID_REQUEST, m)),
    };
    match outcome {
        Err((code, msg)) => {
            resp = resp.with_error_code(code).with_error_message(Some(s(&msg)));
        }
        Ok(f) => {
            let found = az.security().authorizer.as_ref().map(|a| a.describe(&f)).unwrap_or_default();
            let mut groups: std::collections::BTreeMap<(i8, String, i8), Vec<AclDescription>> = Default::default();
            for b in found {
                groups.entry((b.resource_type.code(), b.name.clone(), b.pattern.code())).or_default().push(
                    AclDescription::default()
                        .with_principal(s(&b.principal))
                        .with_host(s(&b.host))
                        .with_operation(b.operation.code())
                        .with_permission_type(b.permission.code()),
                );
            }
            resp.resources = groups
                .into_iter()
                .map(|((rt, name, pt), acls)| {
                    DescribeAclsResource::default().with_resource_type(rt).with_resource_name(s(&name)).with_pattern_type(pt).with_acls(acls)
                })
                .collect();
        }
    }
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::DescribeAcls, version, &resp)))
}

pub(super) fn delete_acls(az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
    let req: DeleteAclsRequest = wire::decode_body(&mut body, version)?;
    let refusal = acl_api_refusal(az, Operation::Alter);
    let filters: Vec<Result<AclFilter, (i16, String)>> = req
        .filters
        .iter()
        .map(|f| match &refusal {
            Some(r) => Err(r.clone()),
            None => filter_of(
                f.resource_type_filter,
                &f.resource_name_filter,
                f.pattern_type_filter,
                &f.principal_filter,
                &f.host_filter,
                f.operation,
                f.permission_type,
            )
            .map_err(|m| (error::INVALID_REQUEST, m)),
        })
        .collect();
    let valid: Vec<AclFilter> = filters.iter().filter_map(|f| f.as_ref().ok().cloned()).collect();
    let mut removed = match (&refusal, valid.is_empty()) {
        (None, false) => {
            let a = az.security().authorizer.as_ref().expect("refused above without an authorizer");
            a.delete(&valid).map_err(|e| (error::KAFKA_STORAGE_ERROR, e))
        }
        _ => Ok(Vec::new()),
    };
    if let Err((_, e)) = &removed {
        tracing::warn!("DeleteAcls: {e}");
    }
    let mut per_filter = match &mut removed {
        Ok(r) => std::mem::take(r).into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let out = filters
        .into_iter()
        .map(|f| match (f.map_err(Some), &removed) {
            (Err(e), r) => {
                let (code, msg) = match (e, r) {
                    (Some(e), _) => e,
                    (None, Err(e)) => e.clone(),
                    (None, Ok(_)) => (error::UNKNOWN_SERVER_ERROR, String::new()),
                };
                DeleteAclsFilterResult::default().with_error_code(code).with_error_message(Some(s(&msg)))
            }
            (Ok(_), Err(e)) => DeleteAclsFilterResult::default().with_error_code(e.0).with_error_message(Some(s(&e.1))),
            (Ok(_), Ok(_)) => {
                let matching = per_filter.next().unwrap_or_default();
                for b in &matching {
                    tracing::info!(principal = az.principal(), acl = ?b, "ACL deleted");
                }
                DeleteAclsFilterResult::default().with_matching_acls(
                    matching
                        .into_iter()
                        .map(|b| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(b.resource_type.code())
                                .with_resource_name(s(&b.name))
                                .with_pattern_type(b.pattern.code())
                                .with_principal(s(&b.principal))
                                .with_host(s(&b.host))
                                .with_operation(b.operation.code())
                                .with_permission_type(b.permission.code())
                        })
                        .collect(),
                )
            }
        })
        .collect();
    let resp = DeleteAclsResponse::default().with_filter_results(out);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::DeleteAcls, version, &resp)))
}

// ---------------------------------------------------------------------------------------------
// SCRAM credential APIs

fn scram_hash(mechanism: i8) -> Option<ScramHash> {
    match mechanism {
        1 => Some(ScramHash::Sha256),
        2 => Some(ScramHash::Sha512),
        _ => None,
    }
}

fn mechanism_code(m: crate::broker::auth::Mechanism) -> i8 {
    match m {
        crate::broker::auth::Mechanism::ScramSha256 => 1,
        crate::broker::auth::Mechanism::ScramSha512 => 2,
        crate::broker::auth::Mechanism::Plain => 0,
    }
}

pub(super) fn describe_scram(az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    use kafka_protocol::messages::describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult};
    let req: DescribeUserScramCredentialsRequest = wire::decode_body(&mut body, version)?;
    let mut resp = DescribeUserScramCredentialsResponse::default();
    if !az.allows_cluster(Operation::Describe) {
        resp.error_code = codes::CLUSTER_AUTHORIZATION_FAILED;
        resp.error_message = Some(s("Authorization failed."));
        return Ok(Reply::Now(wire::encode_response(cid, ApiKey::DescribeUserScramCredentials, version, &resp)));
    }
    let all = az.security().credentials.describe();
    let info = |list: &Vec<(crate::broker::auth::Mechanism, i32)>| -> Vec<CredentialInfo> {
        list.iter().map(|(m, it)| CredentialInfo::default().with_mechanism(mechanism_code(*m)).with_iterations(*it)).collect()
    };
    match req.users {
        None => {
            for (user, list) in &all {
                resp.results.push(DescribeUserScramCredentialsResult::default().with_user(s(user)).with_credential_infos(info(list)));
            }
        }
        Some(users) => {
            let names: Vec<String> = users.iter().map(|u| u.name.to_string()).collect();
            for (i, name) in names.iter().enumerate() {
                let mut r = DescribeUserScramCredentialsResult::default().with_user(s(name));
                if names[..i].contains(name) || names[i + 1..].contains(name) {
                    r = r.with_error_code(codes::DUPLICATE_RESOURCE).with_error_message(Some(s(&format!("Cannot describe SCRAM credentials for the same user twice in a single request: {name}"))));
                } else if let Some(list) = all.get(name) {
                    r = r.with_credential_infos(info(list));
                } else {
                    r = r.with_error_code(codes::RESOURCE_NOT_FOUND).with_error_message(Some(s(&format!("Attempt to describe a user credential that does not exist: {name}"))));
                }
                if names[..i].contains(name) {
                    continue;
                }
                resp.results.push(r);
            }
        }
    }
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::DescribeUserScramCredentials, version, &resp)))
}

/// A user and the outcome of checking each of its requested changes.
type UserChanges = (String, Vec<Result<ScramChange, (i16, String)>>);

pub(super) fn alter_scram(az: &Authz, cid: i32, version: i16, mut body: Bytes) -> Handled {
    use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
    let req: AlterUserScramCredentialsRequest = wire::decode_body(&mut body, version)?;
    let allowed = az.allows_cluster(Operation::Alter);
    // Users in request order, each with its changes.
    let mut users: Vec<UserChanges> = Vec::new();
    fn entry(users: &mut Vec<UserChanges>, user: &str) -> usize {
        match users.iter().position(|(u, _)| u == user) {
            Some(i) => i,
            None => {
                users.push((user.to_string(), Vec::new()));
                users.len() - 1
            }
        }
    }
    let mut seen: Vec<(String, i8)> = Vec::new();
    for d in &req.deletions {
        let user = d.name.to_string();
        let i = entry(&mut users, &user);
        let dup = seen.contains(&(user.clone(), d.mechanism));
        seen.push((user.clone(), d.mechanism));
        users[i].1.push(match scram_hash(d.mechanism) {
            _ if dup => Err((codes::DUPLICATE_RESOURCE, format!("A user credential cannot be altered twice in the same request: {user}"))),
            _ if user.is_empty() => Err((codes::UNACCEPTABLE_CREDENTIAL, "Username must not be empty".into())),
            None => Err((codes::UNSUPPORTED_SASL_MECHANISM, format!("Unknown SCRAM mechanism {}", d.mechanism))),
            Some(hash) => Ok(ScramChange::Delete { user: user.clone(), hash }),
        });
    }
    for u in &req.upsertions {
        let user = u.name.to_string();
        let i = entry(&mut users, &user);
        let dup = seen.contains(&(user.clone(), u.mechanism));
        seen.push((user.clone(), u.mechanism));
        users[i].1.push(match scram_hash(u.mechanism) {
            _ if dup => Err((codes::DUPLICATE_RESOURCE, format!("A user credential cannot be altered twice in the same request: {user}"))),
            _ if user.is_empty() => Err((codes::UNACCEPTABLE_CREDENTIAL, "Username must not be empty".into())),
            None => Err((codes::UNSUPPORTED_SASL_MECHANISM, format!("Unknown SCRAM mechanism {}", u.mechanism))),
            Some(_) if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&u.iterations) => Err((
                codes::UNACCEPTABLE_CREDENTIAL,
                format!("Iterations {} must be within {ITERATIONS_MIN}..={ITERATIONS_MAX}", u.iterations),
            )),
            Some(hash) if u.salt.is_empty() || u.salted_password.len() != hash.output_len() => {
                Err((codes::UNACCEPTABLE_CREDENTIAL, "Salt must not be empty and the salted password must be one hash long".into()))
            }
            Some(hash) => Ok(ScramChange::Upsert {
                user: user.clone(),
                hash,
                credential: ScramCredential::from_salted(hash, &u.salt, u.iterations, &u.salted_password),
            }),
        });
    }
    let store = &az.security().credentials;
    let mut results = Vec::with_capacity(users.len());
    for (user, changes) in users {
        let outcome: Result<(), (i16, String)> = if !allowed {
            Err((codes::CLUSTER_AUTHORIZATION_FAILED, "Authorization failed.".into()))
        } else {
            match changes.into_iter().collect::<Result<Vec<_>, _>>() {
                Err(e) => Err(e),
                Ok(changes) => {
                    let missing = changes.iter().find_map(|c| match c {
                        ScramChange::Delete { user, hash } if store.scram(user, *hash).is_none() => {
                            Some((codes::RESOURCE_NOT_FOUND, format!("Attempt to delete a user credential that does not exist: {user}")))
                        }
                        _ => None,
                    });
                    match missing {
                        Some(e) => Err(e),
                        None => store.apply(changes).map_err(|e| {
                            if e.contains("--sasl-users file") {
                                (error::INVALID_REQUEST, e)
                            } else {
                                tracing::warn!("AlterUserScramCredentials: {e}");
                                (error::KAFKA_STORAGE_ERROR, e)
                            }
                        }),
                    }
                }
            }
        };
        let mut r = AlterUserScramCredentialsResult::default().with_user(s(&user));
        match outcome {
            Ok(()) => tracing::info!(principal = az.principal(), user, "SCRAM credentials altered"),
            Err((code, msg)) => r = r.with_error_code(code).with_error_message(Some(s(&msg))),
        }
        results.push(r);
    }
    let resp = AlterUserScramCredentialsResponse::default().with_results(results);
    Ok(Reply::Now(wire::encode_response(cid, ApiKey::AlterUserScramCredentials, version, &resp)))
}

// ---------------------------------------------------------------------------------------------
// Group requests under an authorizer

fn encode_with<R: Encodable>(cid: i32, version: i16, header_version: i16, r: &R) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(64);
    let h = ResponseHeader::default().with_correlation_id(cid);
    match h.encode(&mut out, header_version).and_then(|_| r.encode(&mut out, version)) {
        Ok(()) => out.to_vec(),
        Err(e) => {
            // Empty: the writer closes the connection (as for any response that cannot be encoded).
            tracing::error!(version, "cannot encode a group response: {e}");
            Vec::new()
        }
    }
}

fn respond<R: Encodable + HeaderVersion>(cid: i32, version: i16, r: &R) -> Reply {
    Reply::Now(encode_with(cid, version, R::header_version(version), r))
}

fn reencode<R: Encodable>(req: &R, version: i16) -> Option<Bytes> {
    let mut b = BytesMut::new();
    req.encode(&mut b, version).ok()?;
    Some(b.freeze())
}

/// Rewrite the response the coordinator produces (`version`: the body's layout version,
/// `header_version`: its header's).
fn post<R: Decodable + Encodable + 'static>(
    reply: GroupReply,
    cid: i32,
    version: i16,
    header_version: i16,
    f: impl FnOnce(&mut R) + Send + 'static,
) -> Reply {
    let rewrite = move |bytes: Vec<u8>| -> Vec<u8> {
        if bytes.is_empty() {
            return bytes;
        }
        let mut b = Bytes::from(bytes);
        if ResponseHeader::decode(&mut b, header_version).is_err() {
            return Vec::new();
        }
        let Ok(mut r) = R::decode(&mut b, version) else { return Vec::new() };
        f(&mut r);
        encode_with(cid, version, header_version, &r)
    };
    match reply {
        GroupReply::Later(g) => Reply::Later(Box::new(move || rewrite(g()))),
        GroupReply::Pending(g) => GroupReply::Pending(Box::new(move |respond: crate::groups::Respond| {
            g(Box::new(move |bytes| respond(rewrite(bytes))))
        }))
        .into(),
        GroupReply::Close(reason) => Reply::Close(reason),
    }
}

fn group_ok(az: &Authz, op: Operation, group: &str) -> bool {
    az.allows(op, ResourceType::Group, group)
}

fn topic_ok(az: &Authz, op: Operation, topic: &str) -> bool {
    az.allows(op, ResourceType::Topic, topic)
}

/// A group-coordinator request with an authorizer configured (see the module doc).
pub(super) fn group_request(
    shared: &Arc<Shared>,
    ctx: &ConnCtx,
    az: &Authz,
    key: i16,
    v: i16,
    header: &RequestHeader,
    body: Bytes,
) -> Reply {
    let cid = header.correlation_id;
    let forward = |mut b: Bytes, version: i16| crate::groups::handle_at(&shared.groups, ctx.advertised(), key, version, header, &mut b);
    let supported = crate::groups::SUPPORTED_APIS.iter().any(|&(k, lo, hi)| k == key && (lo..=hi).contains(&v));
    if !supported {
        // The coordinator closes the connection with its reason.
        return forward(body, v).into();
    }
    const DENIED_GROUP: i16 = codes::GROUP_AUTHORIZATION_FAILED;
    match key {
        11 => match JoinGroupRequest::decode(&mut body.clone(), v) {
            Ok(req) if !group_ok(az, Operation::Read, &req.group_id) => {
                respond(cid, v, &JoinGroupResponse::default().with_error_code(DENIED_GROUP).with_generation_id(-1))
            }
            _ => forward(body, v).into(),
        },
        14 => match SyncGroupRequest::decode(&mut body.clone(), v) {
            Ok(req) if !group_ok(az, Operation::Read, &req.group_id) => {
                respond(cid, v, &SyncGroupResponse::default().with_error_code(DENIED_GROUP))
            }
            _ => forward(body, v).into(),
        },
        12 => match HeartbeatRequest::decode(&mut body.clone(), v) {
            Ok(req) if !group_ok(az, Operation::Read, &req.group_id) => {
                respond(cid, v, &HeartbeatResponse::default().with_error_code(DENIED_GROUP))
            }
            _ => forward(body, v).into(),
        },
        13 => match LeaveGroupRequest::decode(&mut body.clone(), v) {
            Ok(req) if !group_ok(az, Operation::Read, &req.group_id) => {
                respond(cid, v, &LeaveGroupResponse::default().with_error_code(DENIED_GROUP))
            }
            _ => forward(body, v).into(),
        },
        10 => {
            let az = az.clone();
            let key_type = FindCoordinatorRequest::decode(&mut body.clone(), v).map(|r| r.key_type).unwrap_or(0);
            let allowed = move |k: &str| match key_type {
                1 => az.allows(Operation::Describe, ResourceType::TransactionalId, k),
                _ => az.allows(Operation::Describe, ResourceType::Group, k),
            };
            let denied_code = if key_type == 1 { codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED } else { DENIED_GROUP };
            let req_key = FindCoordinatorRequest::decode(&mut body.clone(), v).map(|r| r.key.to_string()).unwrap_or_default();
            post(forward(body, v), cid, v, FindCoordinatorResponse::header_version(v), move |r: &mut FindCoordinatorResponse| {
                if v < 4 {
                    if !allowed(&req_key) {
                        *r = FindCoordinatorResponse::default()
                            .with_error_code(denied_code)
                            .with_error_message(Some(s("Authorization failed.")))
                            .with_node_id(BrokerId(-1))
                            .with_port(-1);
                    }
                } else {
                    for c in r.coordinators.iter_mut().filter(|c| !allowed(&c.key)) {
                        c.error_code = denied_code;
                        c.error_message = Some(s("Authorization failed."));
                        c.node_id = BrokerId(-1);
                        c.host = StrBytes::default();
                        c.port = -1;
                    }
                }
            })
        }
        15 => {
            let az = az.clone();
            post(forward(body, v), cid, v, DescribeGroupsResponse::header_version(v), move |r: &mut DescribeGroupsResponse| {
                for g in r.groups.iter_mut().filter(|g| !group_ok(&az, Operation::Describe, &g.group_id)) {
                    let id = g.group_id.clone();
                    *g = kafka_protocol::messages::describe_groups_response::DescribedGroup::default()
                        .with_group_id(id)
                        .with_error_code(DENIED_GROUP);
                }
            })
        }
        16 => {
            if az.allows_cluster(Operation::Describe) {
                return forward(body, v).into();
            }
            let az = az.clone();
            post(forward(body, v), cid, v, ListGroupsResponse::header_version(v), move |r: &mut ListGroupsResponse| {
                r.groups.retain(|g| group_ok(&az, Operation::Describe, &g.group_id));
            })
        }
        22 => match InitProducerIdRequest::decode(&mut body.clone(), v) {
            Ok(req) => {
                let code = match &req.transactional_id {
                    Some(t) if !az.allows(Operation::Write, ResourceType::TransactionalId, t) => {
                        Some(codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                    }
                    Some(_) => None,
                    // KIP-679: IdempotentWrite on the cluster, or Write on some topic.
                    None if !(az.allows_cluster(Operation::IdempotentWrite) || az.allows_some(Operation::Write, ResourceType::Topic)) => {
                        Some(codes::CLUSTER_AUTHORIZATION_FAILED)
                    }
                    None => None,
                };
                match code {
                    Some(code) => respond(
                        cid,
                        v,
                        &InitProducerIdResponse::default()
                            .with_error_code(code)
                            .with_producer_id(ProducerId(-1))
                            .with_producer_epoch(-1),
                    ),
                    None => forward(body, v).into(),
                }
            }
            Err(_) => forward(body, v).into(),
        },
        68 => match ConsumerGroupHeartbeatRequest::decode(&mut body.clone(), v) {
            // KIP-848, as KafkaApis: Read on the group; Describe on every subscribed topic name.
            Ok(req) if !group_ok(az, Operation::Read, &req.group_id) => respond(
                cid,
                v,
                &ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(DENIED_GROUP)
                    .with_error_message(Some(s("Authorization failed."))),
            ),
            Ok(req) => {
                let denied: Vec<String> = req
                    .subscribed_topic_names
                    .iter()
                    .flatten()
                    .filter(|t| !topic_ok(az, Operation::Describe, t))
                    .map(|t| t.to_string())
                    .collect();
                if denied.is_empty() {
                    forward(body, v).into()
                } else {
                    respond(
                        cid,
                        v,
                        &ConsumerGroupHeartbeatResponse::default()
                            .with_error_code(codes::TOPIC_AUTHORIZATION_FAILED)
                            .with_error_message(Some(s(&format!("Topics not authorized: {}", denied.join(", "))))),
                    )
                }
            }
            Err(_) => forward(body, v).into(),
        },
        69 => {
            let az = az.clone();
            post(forward(body, v), cid, v, ConsumerGroupDescribeResponse::header_version(v), move |r: &mut ConsumerGroupDescribeResponse| {
                for g in r.groups.iter_mut().filter(|g| !group_ok(&az, Operation::Describe, &g.group_id)) {
                    let id = g.group_id.clone();
                    *g = kafka_protocol::messages::consumer_group_describe_response::DescribedGroup::default()
                        .with_group_id(id)
                        .with_error_code(DENIED_GROUP)
                        .with_error_message(Some(s("Authorization failed.")));
                }
            })
        }
        8 => offset_commit(az, cid, v, body, forward),
        9 => offset_fetch(az, cid, v, body, forward),
        42 => match DeleteGroupsRequest::decode(&mut body.clone(), v) {
            Ok(mut req) => {
                let denied: Vec<GroupId> =
                    req.groups_names.iter().filter(|g| !group_ok(az, Operation::Delete, g)).cloned().collect();
                if denied.is_empty() {
                    return forward(body, v).into();
                }
                use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
                let denied_results: Vec<DeletableGroupResult> =
                    denied.iter().map(|g| DeletableGroupResult::default().with_group_id(g.clone()).with_error_code(DENIED_GROUP)).collect();
                req.groups_names.retain(|g| !denied.contains(g));
                if req.groups_names.is_empty() {
                    return respond(cid, v, &DeleteGroupsResponse::default().with_results(denied_results));
                }
                match reencode(&req, v) {
                    Some(b) => post(forward(b, v), cid, v, DeleteGroupsResponse::header_version(v), move |r: &mut DeleteGroupsResponse| {
                        r.results.extend(denied_results)
                    }),
                    None => Reply::Close("DeleteGroups: cannot re-encode the authorized part".into()),
                }
            }
            Err(_) => forward(body, v).into(),
        },
        47 => match OffsetDeleteRequest::decode(&mut body.clone(), v) {
            Ok(req) if !group_ok(az, Operation::Delete, &req.group_id) => {
                respond(cid, v, &OffsetDeleteResponse::default().with_error_code(DENIED_GROUP))
            }
            Ok(mut req) => {
                use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
                let (ok, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut req.topics).into_iter().partition(|t| topic_ok(az, Operation::Read, &t.name));
                if denied.is_empty() {
                    return forward(body, v).into();
                }
                let denied: Vec<OffsetDeleteResponseTopic> = denied
                    .into_iter()
                    .map(|t| {
                        OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(codes::TOPIC_AUTHORIZATION_FAILED)
                                })
                                .collect(),
                        )
                    })
                    .collect();
                req.topics = ok;
                match reencode(&req, v) {
                    Some(b) => post(forward(b, v), cid, v, OffsetDeleteResponse::header_version(v), move |r: &mut OffsetDeleteResponse| {
                        r.topics.extend(denied)
                    }),
                    None => Reply::Close("OffsetDelete: cannot re-encode the authorized part".into()),
                }
            }
            Err(_) => forward(body, v).into(),
        },
        _ => forward(body, v).into(),
    }
}

fn offset_commit(az: &Authz, cid: i32, v: i16, body: Bytes, forward: impl FnOnce(Bytes, i16) -> GroupReply) -> Reply {
    use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    // v0/v1 are decoded by the coordinator's hand decoder and answered in v2's layout.
    let wire_v = v.max(2);
    let hv = OffsetCommitResponse::header_version(v);
    let req = if v < 2 {
        crate::wire::decode_offset_commit_v0_v1(&mut body.clone(), v)
    } else {
        OffsetCommitRequest::decode(&mut body.clone(), v).ok()
    };
    let Some(mut req) = req else { return forward(body, v).into() };
    let answer = |topics: &[kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic], code: i16| -> Vec<OffsetCommitResponseTopic> {
        topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                    t.partitions.iter().map(|p| OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code)).collect(),
                )
            })
            .collect()
    };
    if !group_ok(az, Operation::Read, &req.group_id) {
        let resp = OffsetCommitResponse::default().with_topics(answer(&req.topics, codes::GROUP_AUTHORIZATION_FAILED));
        return Reply::Now(encode_with(cid, wire_v, hv, &resp));
    }
    let (ok, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut req.topics).into_iter().partition(|t| topic_ok(az, Operation::Read, &t.name));
    if denied.is_empty() {
        return forward(body, v).into();
    }
    let denied = answer(&denied, codes::TOPIC_AUTHORIZATION_FAILED);
    if ok.is_empty() {
        return Reply::Now(encode_with(cid, wire_v, hv, &OffsetCommitResponse::default().with_topics(denied)));
    }
    req.topics = ok;
    // Re-encoded at v2 for v0/v1 (the same fields; the response layout is v2's either way).
    match reencode(&req, wire_v) {
        Some(b) => post(forward(b, wire_v), cid, wire_v, hv, move |r: &mut OffsetCommitResponse| r.topics.extend(denied)),
        None => Reply::Close("OffsetCommit: cannot re-encode the authorized part".into()),
    }
}

fn offset_fetch(az: &Authz, cid: i32, v: i16, body: Bytes, forward: impl FnOnce(Bytes, i16) -> GroupReply) -> Reply {
    use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
    let Ok(mut req) = OffsetFetchRequest::decode(&mut body.clone(), v) else { return forward(body, v).into() };
    let hv = OffsetFetchResponse::header_version(v);
    let az2 = az.clone();
    if v < 8 {
        if !group_ok(az, Operation::Describe, &req.group_id) {
            let mut r = OffsetFetchResponse::default().with_error_code(codes::GROUP_AUTHORIZATION_FAILED);
            if v < 2 {
                // No top-level error before v2: each requested partition carries it.
                use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
                r.topics = req
                    .topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        OffsetFetchResponseTopic::default().with_name(t.name.clone()).with_partitions(
                            t.partition_indexes
                                .iter()
                                .map(|&p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(codes::GROUP_AUTHORIZATION_FAILED)
                                })
                                .collect(),
                        )
                    })
                    .collect();
            }
            return respond(cid, v, &r);
        }
        let listed = req.topics.is_some();
        return post(forward(body, v), cid, v, hv, move |r: &mut OffsetFetchResponse| {
            if listed {
                for t in r.topics.iter_mut().filter(|t| !topic_ok(&az2, Operation::Describe, &t.name)) {
                    for p in &mut t.partitions {
                        p.committed_offset = -1;
                        p.metadata = None;
                        p.error_code = codes::TOPIC_AUTHORIZATION_FAILED;
                    }
                }
            } else {
                r.topics.retain(|t| topic_ok(&az2, Operation::Describe, &t.name));
            }
        });
    }
    let denied: Vec<GroupId> = req.groups.iter().filter(|g| !group_ok(az, Operation::Describe, &g.group_id)).map(|g| g.group_id.clone()).collect();
    let listed: std::collections::HashMap<GroupId, bool> = req.groups.iter().map(|g| (g.group_id.clone(), g.topics.is_some())).collect();
    let denied_groups: Vec<OffsetFetchResponseGroup> =
        denied.iter().map(|g| OffsetFetchResponseGroup::default().with_group_id(g.clone()).with_error_code(codes::GROUP_AUTHORIZATION_FAILED)).collect();
    req.groups.retain(|g| !denied.contains(&g.group_id));
    if req.groups.is_empty() {
        return respond(cid, v, &OffsetFetchResponse::default().with_groups(denied_groups));
    }
    let fix = move |r: &mut OffsetFetchResponse| {
        for g in &mut r.groups {
            if listed.get(&g.group_id).copied().unwrap_or(true) {
                for t in g.topics.iter_mut().filter(|t| !topic_ok(&az2, Operation::Describe, &t.name)) {
                    for p in &mut t.partitions {
                        p.committed_offset = -1;
                        p.metadata = None;
                        p.error_code = codes::TOPIC_AUTHORIZATION_FAILED;
                    }
                }
            } else {
                g.topics.retain(|t| topic_ok(&az2, Operation::Describe, &t.name));
            }
        }
        r.groups.extend(denied_groups);
    };
    if denied.is_empty() {
        return post(forward(body, v), cid, v, hv, fix);
    }
    match reencode(&req, v) {
        Some(b) => post(forward(b, v), cid, v, hv, fix),
        None => Reply::Close("OffsetFetch: cannot re-encode the authorized part".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Transaction APIs under an authorizer (KafkaApis' checks)

/// Rewrite a broker reply's response (the transaction coordinator answers `Later`).
fn post_reply<R: Decodable + Encodable + HeaderVersion + 'static>(
    reply: Reply,
    cid: i32,
    version: i16,
    f: impl FnOnce(&mut R) + Send + 'static,
) -> Reply {
    let hv = R::header_version(version);
    let rewrite = move |bytes: Vec<u8>| -> Vec<u8> {
        let mut b = Bytes::from(bytes);
        if b.is_empty() || ResponseHeader::decode(&mut b, hv).is_err() {
            return Vec::new();
        }
        let Ok(mut r) = R::decode(&mut b, version) else { return Vec::new() };
        f(&mut r);
        encode_with(cid, version, hv, &r)
    };
    match reply {
        Reply::Now(v) => Reply::Now(rewrite(v)),
        Reply::Later(g) => Reply::Later(Box::new(move || rewrite(g()))),
        other => other,
    }
}

/// The transaction APIs' authorization, before `crate::txn::route` (with an authorizer):
/// InitProducerId with a transactional id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn:
/// Write on the transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); AddPartitionsToTxn:
/// Write on each topic (denied ones TOPIC_AUTHORIZATION_FAILED, the others
/// OPERATION_NOT_ATTEMPTED, nothing added); AddOffsetsToTxn: Read on the group;
/// TxnOffsetCommit: Write on the transactional id, Read on the group, Read on each topic
/// (denied topics answered 29, the others committed); DescribeTransactions /
/// ListTransactions: Describe on each transactional id (refused / left out). `None`: not a
/// transaction request, or allowed whole: route it as usual.
pub(super) fn txn_request(shared: &Arc<Shared>, az: &Authz, key: i16, v: i16, header: &RequestHeader, body: &Bytes) -> Option<Reply> {
    const TXN_DENIED: i16 = codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
    const OPERATION_NOT_ATTEMPTED: i16 = 55;
    let cid = header.correlation_id;
    let txn_ok = |id: &str| az.allows(Operation::Write, ResourceType::TransactionalId, id);
    let supported = crate::txn::TXN_APIS.iter().any(|&(k, lo, hi)| k == key && (lo..=hi).contains(&v));
    match key {
        22 => {
            let req = InitProducerIdRequest::decode(&mut body.clone(), v).ok()?;
            let id = req.transactional_id.as_ref().map(|t| t.to_string()).filter(|t| !t.is_empty())?;
            (!txn_ok(&id)).then(|| {
                respond(cid, v, &InitProducerIdResponse::default().with_error_code(TXN_DENIED).with_producer_id(ProducerId(-1)).with_producer_epoch(-1))
            })
        }
        _ if !supported => None,
        24 => {
            use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult};
            let req = AddPartitionsToTxnRequest::decode(&mut body.clone(), v).ok()?;
            let id_ok = txn_ok(&req.v3_and_below_transactional_id);
            let topic_denied = |t: &str| !az.allows(Operation::Write, ResourceType::Topic, t);
            if id_ok && !req.v3_and_below_topics.iter().any(|t| topic_denied(&t.name)) {
                return None;
            }
            let results = req
                .v3_and_below_topics
                .iter()
                .map(|t| {
                    let code = if !id_ok {
                        TXN_DENIED
                    } else if topic_denied(&t.name) {
                        codes::TOPIC_AUTHORIZATION_FAILED
                    } else {
                        OPERATION_NOT_ATTEMPTED
                    };
                    AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|&p| AddPartitionsToTxnPartitionResult::default().with_partition_index(p).with_partition_error_code(code))
                            .collect(),
                    )
                })
                .collect();
            Some(respond(cid, v, &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)))
        }
        25 => {
            let req = AddOffsetsToTxnRequest::decode(&mut body.clone(), v).ok()?;
            let code = if !txn_ok(&req.transactional_id) {
                TXN_DENIED
            } else if !group_ok(az, Operation::Read, &req.group_id) {
                codes::GROUP_AUTHORIZATION_FAILED
            } else {
                return None;
            };
            Some(respond(cid, v, &AddOffsetsToTxnResponse::default().with_error_code(code)))
        }
        26 => {
            let req = EndTxnRequest::decode(&mut body.clone(), v).ok()?;
            (!txn_ok(&req.transactional_id)).then(|| {
                respond(cid, v, &EndTxnResponse::default().with_error_code(TXN_DENIED).with_producer_id(ProducerId(-1)).with_producer_epoch(-1))
            })
        }
        28 => {
            use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
            let mut req = TxnOffsetCommitRequest::decode(&mut body.clone(), v).ok()?;
            let answer = |topics: &[kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic], code: i16| {
                topics
                    .iter()
                    .map(|t| {
                        TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code))
                                .collect(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            let whole = if !txn_ok(&req.transactional_id) {
                Some(TXN_DENIED)
            } else if !group_ok(az, Operation::Read, &req.group_id) {
                Some(codes::GROUP_AUTHORIZATION_FAILED)
            } else {
                None
            };
            if let Some(code) = whole {
                return Some(respond(cid, v, &TxnOffsetCommitResponse::default().with_topics(answer(&req.topics, code))));
            }
            let (ok, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut req.topics).into_iter().partition(|t| topic_ok(az, Operation::Read, &t.name));
            if denied.is_empty() {
                return None;
            }
            let denied = answer(&denied, codes::TOPIC_AUTHORIZATION_FAILED);
            if ok.is_empty() {
                return Some(respond(cid, v, &TxnOffsetCommitResponse::default().with_topics(denied)));
            }
            req.topics = ok;
            let Some(mut b) = reencode(&req, v) else {
                return Some(Reply::Close("TxnOffsetCommit: cannot re-encode the authorized part".into()));
            };
            let reply = crate::txn::route(&shared.txn, key, v, header, &mut b)?;
            Some(post_reply(reply, cid, v, move |r: &mut TxnOffsetCommitResponse| r.topics.extend(denied)))
        }
        65 => {
            let req = DescribeTransactionsRequest::decode(&mut body.clone(), v).ok()?;
            let describe_ok = |id: &str| az.allows(Operation::Describe, ResourceType::TransactionalId, id);
            if req.transactional_ids.iter().all(|id| describe_ok(id)) {
                return None;
            }
            let az = az.clone();
            let reply = crate::txn::route(&shared.txn, key, v, header, &mut body.clone())?;
            Some(post_reply(reply, cid, v, move |r: &mut DescribeTransactionsResponse| {
                for st in r.transaction_states.iter_mut() {
                    if !az.allows(Operation::Describe, ResourceType::TransactionalId, &st.transactional_id) {
                        let id = st.transactional_id.clone();
                        *st = kafka_protocol::messages::describe_transactions_response::TransactionState::default()
                            .with_transactional_id(id)
                            .with_error_code(TXN_DENIED);
                    }
                }
            }))
        }
        66 => {
            let az = az.clone();
            let reply = crate::txn::route(&shared.txn, key, v, header, &mut body.clone())?;
            Some(post_reply(reply, cid, v, move |r: &mut ListTransactionsResponse| {
                r.transaction_states.retain(|st| az.allows(Operation::Describe, ResourceType::TransactionalId, &st.transactional_id));
            }))
        }
        _ => None,
    }
}
