// kafkajs transactions for engine/tests/transactions_interop.rs (issue 20):
//   node transactions.js BOOTSTRAP TOPIC
// A committed transaction of 5 records (with sendOffsets for a group), an aborted one of 3,
// another committed one of 2; then a read_committed consumer (kafkajs' default) and a
// read_uncommitted one read the topic from the start until they have seen its end (bounded).
// Prints one JSON line: {"committed": [...values read_committed...], "uncommitted": N,
// "offsets": committed offset of the group, "error": null|name}.
const { Kafka, logLevel } = require("kafkajs");

const [bootstrap, topic] = process.argv.slice(2);
const kafka = new Kafka({ clientId: "txn-js", brokers: [bootstrap], logLevel: logLevel.NOTHING, retry: { retries: 5 } });

async function txn(producer, values, commit, offsets) {
  const t = await producer.transaction();
  try {
    await t.send({ topic, messages: values.map((v) => ({ value: v })) });
    if (offsets) {
      await t.sendOffsets({ consumerGroupId: "txn-js-group", topics: [{ topic, partitions: [{ partition: 0, offset: String(offsets) }] }] });
    }
    if (commit) await t.commit();
    else await t.abort();
  } catch (e) {
    await t.abort().catch(() => {});
    throw e;
  }
}

async function readAll(readUncommitted, want) {
  const consumer = kafka.consumer({ groupId: `txn-js-read-${readUncommitted}-${Date.now()}`, readUncommitted, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const values = [];
  await consumer.run({ eachMessage: async ({ message }) => { values.push(message.value.toString()); } });
  const deadline = Date.now() + 30000;
  while (values.length < want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  // A little longer: anything beyond `want` (an aborted record leaking) shows up too.
  const extra = Date.now() + 1500;
  while (Date.now() < extra) await new Promise((r) => setTimeout(r, 100));
  await consumer.disconnect();
  return values;
}

async function main() {
  const out = { committed: null, uncommitted: null, offsets: null, error: null };
  try {
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });
    const producer = kafka.producer({ transactionalId: "txn-js", maxInFlightRequests: 1, idempotent: true });
    await producer.connect();
    await txn(producer, ["c1", "c2", "c3", "c4", "c5"], true, 42);
    await txn(producer, ["a1", "a2", "a3"], false);
    await txn(producer, ["c6", "c7"], true);
    await producer.disconnect();
    out.committed = await readAll(false, 7);
    out.uncommitted = (await readAll(true, 10)).length;
    const fetched = await admin.fetchOffsets({ groupId: "txn-js-group", topics: [topic] });
    out.offsets = Number(fetched[0].partitions[0].offset);
    await admin.disconnect();
  } catch (e) {
    out.error = `${e.name}: ${e.message}`;
  }
  console.log(JSON.stringify(out));
}

main().then(() => process.exit(0));
