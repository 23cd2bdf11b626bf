#!/usr/bin/env node
// SASL and ACLs through kafkajs (2.2.4), driven by engine/tests/security_interop.rs.
//
// The broker runs with a SASL_PLAINTEXT listener, --sasl-users (PLAIN admin / alice,
// SCRAM-SHA-256 bob, SCRAM-SHA-512 carol), --authorizer and --super-users User:admin.
// Usage: node security.js BOOTSTRAP ALLOWED DENIED. Prints one JSON object (last line).
// As admin: create the topics, CreateAcls (Write + Read on topics prefixed ALLOWED, Read on the
// group "jsg-<user>" for alice, bob, carol), DescribeAcls. Per user: produce 3 records to
// ALLOWED, produce to DENIED (the error), consume ALLOWED in its group (records read), subscribe
// to DENIED (the error), a wrong password (the error). Then DeleteAcls of alice's Write and
// alice's next produce (the error). kafkajs has no AlterUserScramCredentials API. Every wait
// is bounded.
'use strict'
const {
  Kafka, logLevel, AclResourceTypes, AclOperationTypes, AclPermissionTypes, ResourcePatternTypes,
} = require('kafkajs')

const [bootstrap, allowed, denied] = process.argv.slice(2)
const USERS = [['alice', 'alice-secret', 'plain'], ['bob', 'bob-secret', 'scram-sha-256'], ['carol', 'carol-secret', 'scram-sha-512']]

function kafka(user, password, mechanism) {
  return new Kafka({
    clientId: `js-${user}`,
    brokers: [bootstrap],
    sasl: { mechanism, username: user, password },
    connectionTimeout: 10000,
    requestTimeout: 20000,
    retry: { retries: 1, initialRetryTime: 200, maxRetryTime: 1000 },
    logLevel: logLevel.NOTHING,
  })
}

// The Kafka error name a kafkajs error carries (its type, or its cause's), else its class.
function errName(e) {
  for (let c = e; c; c = c.cause || c.originalError) {
    if (c.type && c.type !== 'UNKNOWN') return c.type
  }
  for (let c = e; c; c = c.cause || c.originalError) {
    if (c.name === 'KafkaJSSASLAuthenticationError') return c.name
  }
  return e.name || String(e)
}

function withTimeout(p, ms, what) {
  let t
  return Promise.race([p, new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: no outcome within ${ms} ms`)), ms) })])
    .finally(() => clearTimeout(t))
}

async function produce(k, topic, n, key) {
  const p = k.producer({ allowAutoTopicCreation: false })
  try {
    await withTimeout(p.connect(), 30000, 'producer connect')
    let delivered = 0
    for (let i = 0; i < n; i++) {
      await withTimeout(p.send({ topic, acks: -1, messages: [{ key, value: `${key}-${i}` }] }), 30000, 'produce')
      delivered++
    }
    return { delivered, error: null }
  } catch (e) {
    return { delivered: 0, error: errName(e) }
  } finally {
    await p.disconnect().catch(() => {})
  }
}

async function consume(k, topic, group, key, want) {
  const c = k.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 1000, retry: { retries: 1 } })
  const mine = []
  try {
    await withTimeout(c.connect(), 30000, 'consumer connect')
    await withTimeout(c.subscribe({ topics: [topic], fromBeginning: true }), 30000, 'subscribe')
    let crashed = null
    c.on(c.events.CRASH, (ev) => { crashed = ev.payload.error })
    await c.run({ eachMessage: async ({ message }) => { if (String(message.key) === key) mine.push(String(message.value)) } })
    const deadline = Date.now() + 60000
    while (mine.length < want && !crashed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    if (crashed) return { read: mine.length, error: errName(crashed) }
    return { read: mine.length, error: null }
  } catch (e) {
    return { read: mine.length, error: errName(e) }
  } finally {
    await c.disconnect().catch(() => {})
  }
}

async function loginError(user, mechanism) {
  const a = kafka(user, 'wrong', mechanism).admin()
  try {
    await withTimeout(a.connect(), 30000, 'admin connect')
    await withTimeout(a.listTopics(), 30000, 'listTopics')
    return null
  } catch (e) {
    return errName(e)
  } finally {
    await a.disconnect().catch(() => {})
  }
}

function userAcls(user) {
  const principal = `User:${user}`
  const topic = (operation) => ({
    resourceType: AclResourceTypes.TOPIC, resourceName: allowed, resourcePatternType: ResourcePatternTypes.PREFIXED,
    principal, host: '*', operation, permissionType: AclPermissionTypes.ALLOW,
  })
  return [topic(AclOperationTypes.WRITE), topic(AclOperationTypes.READ), {
    resourceType: AclResourceTypes.GROUP, resourceName: `jsg-${user}`, resourcePatternType: ResourcePatternTypes.LITERAL,
    principal, host: '*', operation: AclOperationTypes.READ, permissionType: AclPermissionTypes.ALLOW,
  }]
}

async function main() {
  const out = {}
  const admin = kafka('admin', 'admin-secret', 'plain').admin()
  await withTimeout(admin.connect(), 30000, 'admin connect')
  await withTimeout(admin.createTopics({ topics: [{ topic: allowed, numPartitions: 1 }, { topic: denied, numPartitions: 1 }] }), 30000, 'createTopics')
  out.create_acls = await withTimeout(admin.createAcls({ acl: USERS.flatMap(([u]) => userAcls(u)) }), 30000, 'createAcls')
  const described = await withTimeout(admin.describeAcls({
    resourceType: AclResourceTypes.ANY, resourcePatternType: ResourcePatternTypes.ANY,
    operation: AclOperationTypes.ANY, permissionType: AclPermissionTypes.ANY,
  }), 30000, 'describeAcls')
  out.describe_acls = described.resources.reduce((n, r) => n + r.acls.length, 0)
  for (const [user, password, mechanism] of USERS) {
    const k = kafka(user, password, mechanism)
    out[user] = {
      produce_allowed: await produce(k, allowed, 3, user),
      produce_denied: await produce(k, denied, 1, user),
      consume_allowed: await consume(k, allowed, `jsg-${user}`, user, 3),
      consume_denied: await consume(k, denied, `jsg-${user}`, user, 1),
      wrong_password: await loginError(user, mechanism),
    }
  }
  const del = await withTimeout(admin.deleteAcls({ filters: [userAcls('alice')[0]] }), 30000, 'deleteAcls')
  out.delete_acls = del.filterResponses.reduce((n, f) => n + f.matchingAcls.length, 0)
  out.alice_after_delete = await produce(kafka('alice', 'alice-secret', 'plain'), allowed, 1, 'alice')
  await admin.disconnect()
  console.log(JSON.stringify(out))
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1) })
