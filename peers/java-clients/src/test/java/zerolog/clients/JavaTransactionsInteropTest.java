package zerolog.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.admin.TransactionState;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Transactions with the Java client (issue 20): a read-process-write loop ({@link EosLoop}, its
 * own JVM) killed with SIGKILL at random points and restarted, then run to its end: every input
 * record appears exactly once in what a read_committed consumer reads, while read_uncommitted
 * also sees the aborted and killed transactions' records. An aborted transaction is invisible to
 * read_committed; the AdminClient lists and describes transactions.
 */
@Timeout(value = 600, unit = TimeUnit.SECONDS)
class JavaTransactionsInteropTest extends BrokerTestBase {
    static final int INPUT = 6000;

    static Map<String, Integer> readAll(String topic, String isolation) {
        Properties p = common();
        p.put("group.id", "count-" + System.nanoTime());
        p.put("enable.auto.commit", "false");
        p.put("isolation.level", isolation);
        Map<String, Integer> counts = new HashMap<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            c.partitionsFor(topic, Duration.ofSeconds(30)).forEach(pi -> tps.add(new TopicPartition(topic, pi.partition())));
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = c.endOffsets(tps, Duration.ofSeconds(30));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (true) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) {
                    counts.merge(r.value(), 1, Integer::sum);
                }
                boolean done = true;
                for (TopicPartition tp : tps) {
                    done &= c.position(tp) >= ends.get(tp);
                }
                if (done) {
                    return counts;
                }
                assertTrue(System.nanoTime() < deadline, "end offsets " + ends + " not reached");
            }
        }
    }

    static Process spawnLoop() throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        File log = Files.createTempFile("eos-loop", ".log").toFile();
        log.deleteOnExit();
        return new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), EosLoop.class.getName(),
                broker.bootstrap(), "jin", "jout", "jeos", "jeos-tx", "4", "240")
                .redirectErrorStream(true).redirectOutput(log).start();
    }

    @Test
    void readProcessWriteIsExactlyOnceAcrossSigkills() throws Exception {
        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic("jin", 3, (short) 1), new NewTopic("jout", 3, (short) 1))).all().get(30, TimeUnit.SECONDS);
        }
        Properties pp = common();
        pp.put("acks", "all");
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp, new StringSerializer(), new StringSerializer())) {
            for (int i = 0; i < INPUT; i++) {
                p.send(new ProducerRecord<>("jin", "k" + i, "i" + i));
            }
            p.flush();
        }
        Random rnd = new Random();
        int interrupted = 0;
        for (int k = 0; k < 3; k++) {
            Process loop = spawnLoop();
            boolean exited = loop.waitFor(2500 + rnd.nextInt(3000), TimeUnit.MILLISECONDS);
            if (!exited) {
                interrupted++;
                loop.destroyForcibly().waitFor(30, TimeUnit.SECONDS); // SIGKILL
            }
        }
        assertTrue(interrupted >= 2, "the loop finished before the kills: nothing was exercised (" + interrupted + ")");
        Process last = spawnLoop();
        assertTrue(last.waitFor(300, TimeUnit.SECONDS), "the loop did not finish");
        assertEquals(0, last.exitValue(), "the loop failed");

        Map<String, Integer> committed = readAll("jout", "read_committed");
        List<String> wrong = new ArrayList<>();
        for (int i = 0; i < INPUT; i++) {
            Integer n = committed.get("out:i" + i);
            if (n == null || n != 1) {
                wrong.add("i" + i + "×" + n);
            }
        }
        assertTrue(wrong.isEmpty(), "not exactly once: " + wrong.subList(0, Math.min(10, wrong.size())));
        assertEquals(INPUT, committed.values().stream().mapToInt(Integer::intValue).sum());
        int uncommitted = readAll("jout", "read_uncommitted").values().stream().mapToInt(Integer::intValue).sum();
        assertTrue(uncommitted > INPUT, "read_uncommitted sees aborted records too: " + uncommitted);
        System.out.println("java eos: " + interrupted + " kills mid-run; committed " + INPUT + " exactly once; read_uncommitted " + uncommitted);
    }

    @Test
    void abortedTransactionIsInvisibleAndOperatorsSeeTransactions() throws Exception {
        Properties pp = common();
        pp.put("transactional.id", "jabort-tx");
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp, new StringSerializer(), new StringSerializer())) {
            p.initTransactions();
            p.beginTransaction();
            for (int i = 0; i < 20; i++) {
                p.send(new ProducerRecord<>("jab", "committed-" + i));
            }
            p.commitTransaction();
            p.beginTransaction();
            for (int i = 0; i < 20; i++) {
                p.send(new ProducerRecord<>("jab", "aborted-" + i));
            }
            p.flush();
            try (Admin a = admin()) {
                TransactionDescription d = a.describeTransactions(List.of("jabort-tx")).description("jabort-tx").get(30, TimeUnit.SECONDS);
                assertEquals(TransactionState.ONGOING, d.state());
                assertEquals(List.of(new TopicPartition("jab", 0)), new ArrayList<>(d.topicPartitions()));
                Collection<TransactionListing> listed = a.listTransactions().all().get(30, TimeUnit.SECONDS);
                assertTrue(listed.stream().anyMatch(l -> l.transactionalId().equals("jabort-tx") && l.state() == TransactionState.ONGOING), listed.toString());
            }
            p.abortTransaction();
        }
        Map<String, Integer> committed = readAll("jab", "read_committed");
        assertEquals(20, committed.size(), committed.toString());
        assertTrue(committed.keySet().stream().allMatch(v -> v.startsWith("committed-")), committed.toString());
        assertEquals(40, readAll("jab", "read_uncommitted").size());
        try (Admin a = admin()) {
            TransactionDescription d = a.describeTransactions(List.of("jabort-tx")).description("jabort-tx").get(30, TimeUnit.SECONDS);
            assertEquals(TransactionState.COMPLETE_ABORT, d.state());
        }
    }
}
