package zerolog.clients;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * kafka-clients 4.x with its defaults (idempotent producer, acks=all) against our broker, one
 * broker process for the class, one topic per test. Every wait polls a condition with a deadline.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class JavaClientInteropTest extends BrokerTestBase {
    private static final Duration DEADLINE = Duration.ofSeconds(60);

    static KafkaProducer<String, String> producer(Map<String, Object> extra) {
        Properties p = common();
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<String, String> consumer(String group, Map<String, Object> extra) {
        Properties p = common();
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        }
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    static void createTopic(String name, int partitions) throws Exception {
        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic(name, partitions, (short) 1))).all().get(30, TimeUnit.SECONDS);
        }
    }

    /** Sends every record, waits for each acknowledgement, returns their metadata in order. */
    static List<RecordMetadata> sendAll(KafkaProducer<String, String> p, List<ProducerRecord<String, String>> records) throws Exception {
        List<Future<RecordMetadata>> fs = new ArrayList<>();
        for (ProducerRecord<String, String> r : records) {
            fs.add(p.send(r));
        }
        p.flush();
        List<RecordMetadata> out = new ArrayList<>();
        for (Future<RecordMetadata> f : fs) {
            out.add(f.get(30, TimeUnit.SECONDS));
        }
        return out;
    }

    /** Polls until {@code n} records arrived (bounded by DEADLINE); fails on more or on timeout. */
    static List<ConsumerRecord<String, String>> pollExactly(KafkaConsumer<String, String> c, int n) {
        List<ConsumerRecord<String, String>> got = new ArrayList<>();
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        while (got.size() < n) {
            if (System.nanoTime() > deadline) {
                fail("consumed " + got.size() + " of " + n + " records within " + DEADLINE);
            }
            c.poll(Duration.ofMillis(200)).forEach(got::add);
        }
        assertEquals(n, got.size(), "more records than produced");
        return got;
    }

    static void await(String what, BooleanSupplier cond) throws InterruptedException {
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                fail("not within " + DEADLINE + ": " + what);
            }
            Thread.sleep(20);
        }
    }

    @Test
    void keysValuesAndHeadersRoundTripWithTheDefaultIdempotentProducer() throws Exception {
        String topic = "keys-headers";
        createTopic(topic, 1);
        List<ProducerRecord<String, String>> sent = new ArrayList<>();
        for (int i = 0; i < 200; i++) {
            List<Header> hs = List.of(new RecordHeader("h-index", Integer.toString(i).getBytes(StandardCharsets.UTF_8)),
                    new RecordHeader("h-null", null));
            sent.add(new ProducerRecord<>(topic, 0, i % 7 == 0 ? null : "key-" + i, "value-" + i, hs));
        }
        try (KafkaProducer<String, String> p = producer(Map.of())) {
            List<RecordMetadata> md = sendAll(p, sent);
            for (int i = 0; i < md.size(); i++) {
                assertEquals(i, md.get(i).offset(), "acknowledged offsets are consecutive");
            }
        }
        try (KafkaConsumer<String, String> c = consumer(null, Map.of())) {
            c.assign(List.of(new TopicPartition(topic, 0)));
            List<ConsumerRecord<String, String>> got = pollExactly(c, sent.size());
            for (int i = 0; i < got.size(); i++) {
                ConsumerRecord<String, String> r = got.get(i);
                assertEquals(i, r.offset());
                assertEquals(sent.get(i).key(), r.key());
                assertEquals("value-" + i, r.value());
                Header[] hs = r.headers().toArray();
                assertEquals(2, hs.length);
                assertEquals("h-index", hs[0].key());
                assertArrayEquals(Integer.toString(i).getBytes(StandardCharsets.UTF_8), hs[0].value());
                assertEquals("h-null", hs[1].key());
                assertNull(hs[1].value());
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void everyCompressionCodecRoundTrips(String codec) throws Exception {
        String topic = "codec-" + codec;
        createTopic(topic, 1);
        List<ProducerRecord<String, String>> sent = new ArrayList<>();
        for (int i = 0; i < 500; i++) {
            sent.add(new ProducerRecord<>(topic, "k" + i, ("compressible " + codec + " ").repeat(20) + i));
        }
        try (KafkaProducer<String, String> p = producer(Map.of(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
                ProducerConfig.LINGER_MS_CONFIG, 20))) {
            sendAll(p, sent);
        }
        try (KafkaConsumer<String, String> c = consumer(null, Map.of())) {
            c.assign(List.of(new TopicPartition(topic, 0)));
            List<ConsumerRecord<String, String>> got = pollExactly(c, sent.size());
            for (int i = 0; i < got.size(); i++) {
                assertEquals(i, got.get(i).offset());
                assertEquals(sent.get(i).key(), got.get(i).key());
                assertEquals(sent.get(i).value(), got.get(i).value());
            }
        }
    }

    /** Consumer that records what it was assigned. */
    static final class Tracked implements ConsumerRebalanceListener {
        final Set<TopicPartition> owned = java.util.concurrent.ConcurrentHashMap.newKeySet();

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> ps) {
            owned.removeAll(ps);
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> ps) {
            owned.addAll(ps);
        }
    }

    @Test
    void classicConsumerGroupRebalancesCommitsAndResumes() throws Exception {
        String topic = "group-rebalance";
        String group = "java-classic";
        createTopic(topic, 4);
        Map<String, Object> fast = Map.of(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 200,
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 6000, ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                "org.apache.kafka.clients.consumer.RangeAssignor");
        try (KafkaProducer<String, String> p = producer(Map.of())) {
            List<ProducerRecord<String, String>> first = new ArrayList<>();
            for (int i = 0; i < 400; i++) {
                first.add(new ProducerRecord<>(topic, i % 4, "k" + i, "first-" + i));
            }
            sendAll(p, first);
        }
        Set<String> seen = new HashSet<>();
        try (KafkaConsumer<String, String> a = consumer(group, fast); KafkaConsumer<String, String> b = consumer(group, fast)) {
            Tracked ta = new Tracked();
            Tracked tb = new Tracked();
            a.subscribe(List.of(topic), ta);
            await("consumer a owns all 4 partitions", () -> {
                a.poll(Duration.ofMillis(100)).forEach(r -> seen.add(r.value()));
                return ta.owned.size() == 4;
            });
            a.commitSync();
            b.subscribe(List.of(topic), tb);
            // Both poll until the rebalance gives each two partitions.
            await("a and b own 2 partitions each", () -> {
                a.poll(Duration.ofMillis(50)).forEach(r -> seen.add(r.value()));
                b.poll(Duration.ofMillis(50)).forEach(r -> seen.add(r.value()));
                return ta.owned.size() == 2 && tb.owned.size() == 2;
            });
            Set<TopicPartition> union = new HashSet<>(ta.owned);
            union.addAll(tb.owned);
            assertEquals(4, union.size(), "the partitions are split, not shared");
            await("all 400 first records consumed by the group", () -> {
                a.poll(Duration.ofMillis(50)).forEach(r -> seen.add(r.value()));
                b.poll(Duration.ofMillis(50)).forEach(r -> seen.add(r.value()));
                return seen.size() == 400;
            });
            a.commitSync();
            b.commitSync();
            try (Admin admin = admin()) {
                ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS).get(group);
                assertEquals(GroupState.STABLE, d.groupState());
                assertEquals(2, d.members().size());
                Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(group)
                        .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
                for (int i = 0; i < 4; i++) {
                    assertEquals(100, committed.get(new TopicPartition(topic, i)).offset(), "committed offset of partition " + i);
                }
                assertTrue(admin.listConsumerGroups().all().get(30, TimeUnit.SECONDS).stream()
                        .anyMatch(l -> l.groupId().equals(group)), "listConsumerGroups shows the group");
            }
        }
        // A new member of the group resumes at the committed offsets: only the second batch.
        try (KafkaProducer<String, String> p = producer(Map.of())) {
            List<ProducerRecord<String, String>> second = new ArrayList<>();
            for (int i = 0; i < 40; i++) {
                second.add(new ProducerRecord<>(topic, i % 4, "k" + i, "second-" + i));
            }
            sendAll(p, second);
        }
        try (KafkaConsumer<String, String> c = consumer(group, fast)) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<String, String>> got = pollExactly(c, 40);
            assertTrue(got.stream().allMatch(r -> r.value().startsWith("second-")), "only records after the commit: " + got);
            assertEquals(40, got.stream().map(ConsumerRecord::value).collect(Collectors.toSet()).size());
        }
    }

    @Test
    void seekOffsetsForTimesAndEndOffsets() throws Exception {
        String topic = "seek-times";
        createTopic(topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = System.currentTimeMillis() - 100_000;
        try (KafkaProducer<String, String> p = producer(Map.of())) {
            // One record per batch (each send waits for its acknowledgement); records inside one
            // batch: offsetsForTimesInsideABatch below.
            for (int i = 0; i < 100; i++) {
                sendAll(p, List.of(new ProducerRecord<>(topic, 0, base + i * 1000L, "k" + i, "v" + i)));
            }
        }
        try (KafkaConsumer<String, String> c = consumer(null, Map.of())) {
            c.assign(List.of(tp));
            assertEquals(Map.of(tp, 0L), c.beginningOffsets(List.of(tp), Duration.ofSeconds(30)));
            assertEquals(Map.of(tp, 100L), c.endOffsets(List.of(tp), Duration.ofSeconds(30)));
            Map<TopicPartition, OffsetAndTimestamp> at = c.offsetsForTimes(Map.of(tp, base + 41_500L), Duration.ofSeconds(30));
            assertNotNull(at.get(tp), "offsetsForTimes found a record at or after the time");
            assertEquals(42, at.get(tp).offset());
            assertEquals(base + 42_000L, at.get(tp).timestamp());
            Map<TopicPartition, OffsetAndTimestamp> after = c.offsetsForTimes(Map.of(tp, base + 1_000_000L), Duration.ofSeconds(30));
            assertNull(after.get(tp), "no record at or after a later time");

            c.seek(tp, 42);
            ConsumerRecord<String, String> r = pollExactlyAtLeastOne(c);
            assertEquals(42, r.offset());
            assertEquals("v42", r.value());
            assertEquals(base + 42_000L, r.timestamp());
            c.seekToEnd(List.of(tp));
            assertEquals(100, c.position(tp, Duration.ofSeconds(30)));
            c.seekToBeginning(List.of(tp));
            assertEquals(0, c.position(tp, Duration.ofSeconds(30)));
        }
    }

    /**
     * Kafka answers ListOffsets by timestamp at record level (the first record with timestamp >= t),
     * also inside a compressed batch of many records: 100 records in one lz4 batch, the lookup of
     * record 42's time gives offset 42 and its timestamp.
     */
    @Test
    void offsetsForTimesInsideABatch() throws Exception {
        String topic = "seek-times-batched";
        createTopic(topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = System.currentTimeMillis() - 100_000;
        try (KafkaProducer<String, String> p = producer(Map.of(ProducerConfig.LINGER_MS_CONFIG, 50,
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4"))) {
            List<ProducerRecord<String, String>> rs = new ArrayList<>();
            for (int i = 0; i < 100; i++) {
                rs.add(new ProducerRecord<>(topic, 0, base + i * 1000L, "k" + i, "v" + i));
            }
            sendAll(p, rs);
        }
        try (KafkaConsumer<String, String> c = consumer(null, Map.of())) {
            Map<TopicPartition, OffsetAndTimestamp> at = c.offsetsForTimes(Map.of(tp, base + 41_500L), Duration.ofSeconds(30));
            assertEquals(42, at.get(tp).offset());
            assertEquals(base + 42_000L, at.get(tp).timestamp());
        }
    }

    static ConsumerRecord<String, String> pollExactlyAtLeastOne(KafkaConsumer<String, String> c) {
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        while (System.nanoTime() < deadline) {
            var rs = c.poll(Duration.ofMillis(200));
            if (!rs.isEmpty()) {
                return rs.iterator().next();
            }
        }
        return fail("no record within " + DEADLINE);
    }

    @Test
    void adminClientTopicsClusterAndOffsets() throws Exception {
        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic("admin-a", 3, (short) 1), new NewTopic("admin-b", 1, (short) 1)))
                    .all().get(30, TimeUnit.SECONDS);
            Set<String> names = a.listTopics().names().get(30, TimeUnit.SECONDS);
            assertTrue(names.containsAll(Set.of("admin-a", "admin-b")), "listTopics: " + names);
            assertFalse(names.contains("__consumer_offsets"), "internal topics are not listed by default");

            Map<String, TopicDescription> d = a.describeTopics(List.of("admin-a")).allTopicNames().get(30, TimeUnit.SECONDS);
            assertEquals(3, d.get("admin-a").partitions().size());

            DescribeClusterResult c = a.describeCluster();
            assertEquals(1, c.nodes().get(30, TimeUnit.SECONDS).size());
            assertNotNull(c.controller().get(30, TimeUnit.SECONDS));
            assertNotNull(c.clusterId().get(30, TimeUnit.SECONDS));

            // Creating an existing topic fails with TopicExistsException.
            ExecutionException dup = org.junit.jupiter.api.Assertions.assertThrows(ExecutionException.class,
                    () -> a.createTopics(List.of(new NewTopic("admin-b", 1, (short) 1))).all().get(30, TimeUnit.SECONDS));
            assertEquals("TopicExistsException", dup.getCause().getClass().getSimpleName());

            try (KafkaProducer<String, String> p = producer(Map.of())) {
                List<ProducerRecord<String, String>> rs = new ArrayList<>();
                for (int i = 0; i < 30; i++) {
                    rs.add(new ProducerRecord<>("admin-a", i % 3, null, "v" + i));
                }
                sendAll(p, rs);
            }
            Map<TopicPartition, OffsetSpec> q = new HashMap<>();
            for (int i = 0; i < 3; i++) {
                q.put(new TopicPartition("admin-a", i), OffsetSpec.latest());
            }
            Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> latest = a.listOffsets(q).all().get(30, TimeUnit.SECONDS);
            for (int i = 0; i < 3; i++) {
                assertEquals(10, latest.get(new TopicPartition("admin-a", i)).offset());
            }
            q.replaceAll((tp, s) -> OffsetSpec.earliest());
            a.listOffsets(q).all().get(30, TimeUnit.SECONDS).values().forEach(info -> assertEquals(0, info.offset()));

            a.deleteTopics(List.of("admin-b")).all().get(30, TimeUnit.SECONDS);
            await("admin-b gone from listTopics", () -> {
                try {
                    return !a.listTopics().names().get(30, TimeUnit.SECONDS).contains("admin-b");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
        }
    }

    @Test
    void createTopicsWithConfigsIsHonouredOrRefusedNotSilentlyDropped() throws Exception {
        // A createTopics carrying configs: applied (described as the topic's own), or, for a
        // value the broker refuses, INVALID_CONFIG saying why, and no topic is made.
        try (Admin a = admin()) {
            NewTopic t = new NewTopic("admin-configs", 1, (short) 1).configs(Map.of("retention.ms", "3600000"));
            a.createTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
            org.apache.kafka.common.config.ConfigResource r =
                    new org.apache.kafka.common.config.ConfigResource(org.apache.kafka.common.config.ConfigResource.Type.TOPIC, "admin-configs");
            org.apache.kafka.clients.admin.ConfigEntry e =
                    a.describeConfigs(List.of(r)).all().get(30, TimeUnit.SECONDS).get(r).get("retention.ms");
            assertEquals("3600000", e.value());
            assertEquals(org.apache.kafka.clients.admin.ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, e.source());

            NewTopic c = new NewTopic("admin-compact", 1, (short) 1).configs(Map.of("cleanup.policy", "compact"));
            a.createTopics(List.of(c)).all().get(30, TimeUnit.SECONDS);
            org.apache.kafka.common.config.ConfigResource rc =
                    new org.apache.kafka.common.config.ConfigResource(org.apache.kafka.common.config.ConfigResource.Type.TOPIC, "admin-compact");
            assertEquals("compact", a.describeConfigs(List.of(rc)).all().get(30, TimeUnit.SECONDS).get(rc).get("cleanup.policy").value());

            NewTopic bad = new NewTopic("admin-bad-segment", 1, (short) 1).configs(Map.of("segment.bytes", "4294967296"));
            ExecutionException x = org.junit.jupiter.api.Assertions.assertThrows(ExecutionException.class,
                    () -> a.createTopics(List.of(bad)).all().get(30, TimeUnit.SECONDS));
            assertTrue(x.getCause() instanceof org.apache.kafka.common.errors.InvalidConfigurationException, "cause: " + x.getCause());
            assertTrue(x.getCause().getMessage().contains("segment.bytes"), x.getCause().getMessage());
            assertFalse(a.listTopics().names().get(30, TimeUnit.SECONDS).contains("admin-bad-segment"));
        }
    }

    @Test
    void newConsumerGroupProtocolDeliversTheRecord() throws Exception {
        // group.protocol=consumer (KIP-848) is served (JavaConsumerProtocolInteropTest covers
        // rebalancing): the consumer gets the record within 30 s.
        String topic = "kip848";
        createTopic(topic, 1);
        try (KafkaProducer<String, String> p = producer(Map.of())) {
            sendAll(p, List.of(new ProducerRecord<>(topic, "k", "v")));
        }
        try (KafkaConsumer<String, String> c = consumer("kip848-group", Map.of(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer"))) {
            c.subscribe(List.of(topic));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            int got = 0;
            while (got == 0 && System.nanoTime() < deadline) {
                got += c.poll(Duration.ofMillis(200)).count();
            }
            assertEquals(1, got, "group.protocol=consumer did not deliver the record within 30 s");
        }
    }
}
