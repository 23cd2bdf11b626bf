package zerolog.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The Java client's new consumer (group.protocol=consumer, KIP-848) against our broker: a member
 * joins and reads, a second joins and the partitions are split (AdminClient describes the
 * group as a CONSUMER group with both members), one leaves and the other takes everything, one
 * in its own JVM is SIGKILLed (no leave) and the other gets its partitions after the broker's
 * session timeout. Every record is read
 * exactly once across the group (offsets committed synchronously after each poll). A
 * read-process-write loop commits a member's offsets in its transactions
 * (sendOffsetsToTransaction with the member's group metadata: its member id and epoch). A
 * static member (group.instance.id) that closes keeps its partitions, and its next incarnation
 * gets them back while the other member keeps its own.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class JavaConsumerProtocolInteropTest {
    private static final int PARTITIONS = 6;
    private static final int PER_PHASE = 300;
    private static OurBroker broker;

    @BeforeAll
    static void start() throws Exception {
        broker = new OurBroker("--durability", "group", "--group-consumer-session-timeout-ms", "6000",
                "--group-consumer-heartbeat-interval-ms", "500");
    }

    @AfterAll
    static void stop() throws Exception {
        if (broker != null) {
            broker.close();
        }
    }

    private static Admin admin() {
        Properties p = new Properties();
        p.put("bootstrap.servers", broker.bootstrap());
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return Admin.create(p);
    }

    private static void produce(String topic, int first) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", broker.bootstrap());
        p.put("acks", "all");
        try (KafkaProducer<String, String> pr = new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
            List<java.util.concurrent.Future<?>> sent = new ArrayList<>();
            for (int i = first; i < first + PER_PHASE; i++) {
                sent.add(pr.send(new ProducerRecord<>(topic, (i - first) % PARTITIONS, null, "v" + i)));
            }
            for (var f : sent) {
                f.get(30, TimeUnit.SECONDS);
            }
        }
    }

    /** A new-protocol consumer that records what it reads and commits after each poll. */
    private static final class Member implements AutoCloseable {
        final String name;
        final KafkaConsumer<String, String> c;
        final List<String> seen;

        Member(String group, String name, String topic, List<String> seen, String assignor) {
            this(group, name, topic, seen, assignor, null);
        }

        /** With an instance id: a static member (KIP-345 as KIP-848 keeps it). */
        Member(String group, String name, String topic, List<String> seen, String assignor, String instanceId) {
            Properties p = new Properties();
            if (instanceId != null) {
                p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instanceId);
            }
            p.put("bootstrap.servers", broker.bootstrap());
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
            p.put(ConsumerConfig.GROUP_REMOTE_ASSIGNOR_CONFIG, assignor);
            p.put(ConsumerConfig.CLIENT_ID_CONFIG, name);
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
            this.name = name;
            this.seen = seen;
            this.c = new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer());
            c.subscribe(List.of(topic));
        }

        void poll() {
            var records = c.poll(Duration.ofMillis(50));
            for (ConsumerRecord<String, String> r : records) {
                seen.add(r.value());
            }
            if (!records.isEmpty() || commitPending) {
                try {
                    c.commitSync(Duration.ofSeconds(30));
                    commitPending = false;
                } catch (org.apache.kafka.clients.consumer.CommitFailedException e) {
                    // A commit racing an epoch bump (its heartbeat answered first): Kafka's
                    // answer is STALE_MEMBER_EPOCH, "retry after receiving its updated member
                    // epoch" — the positions are committed again after the next poll.
                    if (!String.valueOf(e.getMessage()).contains("stale member epoch")) {
                        throw e;
                    }
                    commitPending = true;
                }
            }
        }

        /** A commit refused with STALE_MEMBER_EPOCH, to be made again after the next poll. */
        private boolean commitPending;

        Set<Integer> parts() {
            return c.assignment().stream().map(TopicPartition::partition).collect(Collectors.toCollection(TreeSet::new));
        }

        @Override
        public void close() {
            c.close();
        }
    }

    private static void waitFor(long deadline, BooleanSupplier cond, Runnable step, String what) {
        while (!cond.getAsBoolean()) {
            assertTrue(System.nanoTime() < deadline, "timed out waiting for " + what);
            step.run();
        }
    }

    private static void assertExactlyOnce(List<String> seen, int total) {
        Map<String, Integer> counts = new HashMap<>();
        for (String v : seen) {
            counts.merge(v, 1, Integer::sum);
        }
        List<String> dups = counts.entrySet().stream().filter(e -> e.getValue() > 1).map(Map.Entry::getKey).limit(5).toList();
        assertTrue(dups.isEmpty(), "records read more than once: " + dups);
        Set<String> want = new HashSet<>();
        for (int i = 0; i < total; i++) {
            want.add("v" + i);
        }
        assertEquals(want, counts.keySet(), "every record read");
    }

    private void joinSplitLeave(String topic, String assignor) throws Exception {
        String group = topic + "-group";
        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get(30, TimeUnit.SECONDS);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        List<String> seen = new ArrayList<>();
        produce(topic, 0);
        Member ma = new Member(group, "A", topic, seen, assignor);
        try (ma) {
            waitFor(deadline, () -> seen.size() >= PER_PHASE, ma::poll, "A to read phase 1");
            assertEquals(PARTITIONS, ma.parts().size());
            try (Member mb = new Member(group, "B", topic, seen, assignor)) {
                Runnable both = () -> {
                    ma.poll();
                    mb.poll();
                };
                waitFor(deadline, () -> !ma.parts().isEmpty() && !mb.parts().isEmpty()
                        && ma.parts().size() + mb.parts().size() == PARTITIONS, both, "A and B to split the partitions");
                Set<Integer> overlap = new TreeSet<>(ma.parts());
                overlap.retainAll(mb.parts());
                assertTrue(overlap.isEmpty(), "A " + ma.parts() + " and B " + mb.parts() + " share partitions");
                try (Admin a = admin()) {
                    ConsumerGroupDescription d = a.describeConsumerGroups(List.of(group)).describedGroups().get(group)
                            .get(30, TimeUnit.SECONDS);
                    assertEquals(GroupType.CONSUMER, d.type());
                    assertEquals(assignor, d.partitionAssignor());
                    Map<String, Set<Integer>> described = new HashMap<>();
                    d.members().forEach(m -> described.put(m.clientId(), m.assignment().topicPartitions().stream()
                            .map(TopicPartition::partition).collect(Collectors.toCollection(TreeSet::new))));
                    assertEquals(Map.of("A", ma.parts(), "B", mb.parts()), described);
                }
                produce(topic, PER_PHASE);
                waitFor(deadline, () -> seen.size() >= 2 * PER_PHASE, both, "phase 2 to be read by A and B");
            } // B leaves
            waitFor(deadline, () -> ma.parts().size() == PARTITIONS, ma::poll, "A to take every partition after B left");
            produce(topic, 2 * PER_PHASE);
            waitFor(deadline, () -> seen.size() >= 3 * PER_PHASE, ma::poll, "phase 3 to be read by A");
            long linger = System.nanoTime() + TimeUnit.SECONDS.toNanos(1);
            while (System.nanoTime() < linger) {
                ma.poll(); // anything read twice would arrive now
            }
        }
        assertExactlyOnce(seen, 3 * PER_PHASE);
    }

    @Test
    void membersJoinAndLeaveWithTheUniformAssignor() throws Exception {
        joinSplitLeave("j848-uniform", "uniform");
    }

    @Test
    void membersJoinAndLeaveWithTheRangeAssignor() throws Exception {
        joinSplitLeave("j848-range", "range");
    }

    @Test
    void aKilledMemberLosesItsPartitionsAfterTheSessionTimeout() throws Exception {
        String topic = "j848-crash";
        String group = "j848-crash-group";
        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get(30, TimeUnit.SECONDS);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        List<String> seen = new ArrayList<>();
        // B runs in its own JVM (the test classpath) and is SIGKILLed: no leave heartbeat.
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process victim = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                ConsumerProtocolVictim.class.getName(), broker.bootstrap(), group, topic)
                .redirectError(ProcessBuilder.Redirect.DISCARD).start();
        List<String> fromB = Collections.synchronizedList(new ArrayList<>());
        AtomicInteger bParts = new AtomicInteger(-1);
        Thread reader = new Thread(() -> {
            try (var in = new java.io.BufferedReader(new java.io.InputStreamReader(victim.getInputStream()))) {
                for (String line; (line = in.readLine()) != null; ) {
                    if (line.startsWith("READ ")) {
                        fromB.add(line.substring(5));
                    } else if (line.startsWith("PARTS ")) {
                        bParts.set(Integer.parseInt(line.substring(6)));
                    }
                }
            } catch (java.io.IOException gone) {
                // the victim was killed
            }
        });
        reader.start();
        try (Member ma = new Member(group, "A", topic, seen, "uniform")) {
            try {
                waitFor(deadline, () -> bParts.get() > 0 && !ma.parts().isEmpty()
                        && ma.parts().size() + bParts.get() == PARTITIONS, ma::poll, "A and B to split the partitions");
                produce(topic, 0);
                waitFor(deadline, () -> seen.size() + fromB.size() >= PER_PHASE, ma::poll, "A and B to read phase 1");
                long settle = System.nanoTime() + TimeUnit.SECONDS.toNanos(1);
                while (System.nanoTime() < settle) {
                    ma.poll(); // B's last commits land
                }
            } finally {
                victim.destroyForcibly();
            }
            assertTrue(victim.waitFor(30, TimeUnit.SECONDS), "victim killed");
            long gone = System.nanoTime();
            reader.join(10_000);
            assertTrue(!fromB.isEmpty(), "B read its share before the kill");
            produce(topic, PER_PHASE);
            waitFor(deadline, () -> ma.parts().size() == PARTITIONS, ma::poll, "A to take B's partitions");
            double took = (System.nanoTime() - gone) / 1e9;
            System.out.printf("A took the killed B's partitions %.1f s after the kill%n", took);
            assertTrue(took > 3.0, "B's partitions moved after " + took + " s, before its session timed out");
            waitFor(deadline, () -> seen.size() + fromB.size() >= 2 * PER_PHASE, ma::poll, "phase 2 to be read by A");
        }
        List<String> all = new ArrayList<>(seen);
        all.addAll(fromB);
        assertExactlyOnce(all, 2 * PER_PHASE);
    }

    @Test
    void aMembersOffsetsCommitWithItsTransactions() throws Exception {
        String topic = "j848-eos-in";
        String out = "j848-eos-out";
        String group = "j848-eos-group";
        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1), new NewTopic(out, 1, (short) 1)))
                    .all().get(30, TimeUnit.SECONDS);
        }
        produce(topic, 0);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        Properties cp = new Properties();
        cp.put("bootstrap.servers", broker.bootstrap());
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        Properties pp = new Properties();
        pp.put("bootstrap.servers", broker.bootstrap());
        pp.put("transactional.id", "j848-eos");
        List<String> seen = new ArrayList<>();
        int aborted = 0;
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp, new StringDeserializer(), new StringDeserializer());
                KafkaProducer<String, String> p = new KafkaProducer<>(pp, new StringSerializer(), new StringSerializer())) {
            p.initTransactions();
            c.subscribe(List.of(topic));
            while (seen.size() < PER_PHASE) {
                assertTrue(System.nanoTime() < deadline, "timed out reading " + PER_PHASE + " records, read " + seen.size());
                var recs = c.poll(Duration.ofMillis(100));
                if (recs.isEmpty()) {
                    continue;
                }
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (TopicPartition tp : recs.partitions()) {
                    offsets.put(tp, new OffsetAndMetadata(c.position(tp)));
                }
                p.beginTransaction();
                for (ConsumerRecord<String, String> r : recs) {
                    p.send(new ProducerRecord<>(out, "out:" + r.value()));
                }
                p.sendOffsetsToTransaction(offsets, c.groupMetadata());
                if (aborted == 0) {
                    // The first transaction is aborted: neither its records nor its offsets count.
                    p.abortTransaction();
                    aborted++;
                    Map<TopicPartition, OffsetAndMetadata> committed = c.committed(offsets.keySet(), Duration.ofSeconds(30));
                    for (TopicPartition tp : offsets.keySet()) {
                        OffsetAndMetadata om = committed.get(tp);
                        long at = om == null ? 0 : om.offset();
                        assertEquals(0, at, "offset of an aborted transaction applied on " + tp);
                        c.seek(tp, at);
                    }
                    continue;
                }
                p.commitTransaction();
                for (ConsumerRecord<String, String> r : recs) {
                    seen.add(r.value());
                }
            }
            Set<TopicPartition> all = new HashSet<>();
            for (int i = 0; i < PARTITIONS; i++) {
                all.add(new TopicPartition(topic, i));
            }
            Map<TopicPartition, Long> ends = c.endOffsets(all, Duration.ofSeconds(30));
            Map<TopicPartition, OffsetAndMetadata> committed = c.committed(all, Duration.ofSeconds(30));
            for (TopicPartition tp : all) {
                assertEquals(ends.get(tp), committed.get(tp) == null ? null : committed.get(tp).offset(), "committed offset of " + tp);
            }
        }
        assertExactlyOnce(seen, PER_PHASE);
        // The output holds each record once: the aborted transaction's records are not read.
        Properties rp = new Properties();
        rp.put("bootstrap.servers", broker.bootstrap());
        rp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        rp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        List<String> outs = new ArrayList<>();
        try (KafkaConsumer<String, String> r = new KafkaConsumer<>(rp, new StringDeserializer(), new StringDeserializer())) {
            TopicPartition tp = new TopicPartition(out, 0);
            r.assign(List.of(tp));
            long end = r.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp);
            while (r.position(tp) < end) {
                assertTrue(System.nanoTime() < deadline, "timed out reading the output");
                r.poll(Duration.ofMillis(100)).forEach(rec -> outs.add(rec.value().substring(4)));
            }
        }
        assertExactlyOnce(outs, PER_PHASE);
    }

    /** Member id → partitions of the group as AdminClient describes it, keyed by instance id. */
    private static Map<String, Set<Integer>> describedByInstance(String group) throws Exception {
        try (Admin a = admin()) {
            ConsumerGroupDescription d = a.describeConsumerGroups(List.of(group)).describedGroups().get(group)
                    .get(30, TimeUnit.SECONDS);
            Map<String, Set<Integer>> m = new HashMap<>();
            d.members().forEach(x -> m.put(x.groupInstanceId().orElse("-"), x.assignment().topicPartitions().stream()
                    .map(TopicPartition::partition).collect(Collectors.toCollection(TreeSet::new))));
            return m;
        }
    }

    @Test
    void aStaticMemberGetsItsPartitionsBackAfterARestart() throws Exception {
        String topic = "j848-static";
        String group = "j848-static-group";
        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get(30, TimeUnit.SECONDS);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        List<String> seen = new ArrayList<>();
        produce(topic, 0);
        try (Member mb = new Member(group, "B", topic, seen, "uniform", "b")) {
            Set<Integer> aParts;
            Set<Integer> bParts;
            try (Member ma = new Member(group, "A", topic, seen, "uniform", "a")) {
                Runnable both = () -> {
                    ma.poll();
                    mb.poll();
                };
                waitFor(deadline, () -> !ma.parts().isEmpty() && !mb.parts().isEmpty()
                        && ma.parts().size() + mb.parts().size() == PARTITIONS, both, "A and B to split the partitions");
                waitFor(deadline, () -> seen.size() >= PER_PHASE, both, "A and B to read phase 1");
                aParts = ma.parts();
                bParts = mb.parts();
            } // A closes: a static member leaves temporarily (member epoch -2)
            Map<String, Set<Integer>> described = describedByInstance(group);
            assertEquals(Map.of("a", aParts, "b", bParts), described, "the closed static member keeps its partitions");
            produce(topic, PER_PHASE);
            try (Member ma2 = new Member(group, "A2", topic, seen, "uniform", "a")) {
                Runnable both = () -> {
                    ma2.poll();
                    mb.poll();
                };
                waitFor(deadline, () -> !ma2.parts().isEmpty(), both, "A's next incarnation to get partitions");
                assertEquals(aParts, ma2.parts(), "the static member's partitions come back to it");
                assertEquals(bParts, mb.parts(), "the other member keeps its partitions");
                waitFor(deadline, () -> seen.size() >= 2 * PER_PHASE, both, "phase 2 to be read");
                long linger = System.nanoTime() + TimeUnit.SECONDS.toNanos(1);
                while (System.nanoTime() < linger) {
                    both.run(); // anything read twice would arrive now
                }
            }
        }
        assertExactlyOnce(seen, 2 * PER_PHASE);
    }
}
