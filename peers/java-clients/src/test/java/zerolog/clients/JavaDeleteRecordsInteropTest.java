package zerolog.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The Java AdminClient's deleteRecords (DeleteRecords, key 21) against our broker: the low
 * watermark answered, ListOffsets earliest, a consumer with auto.offset.reset=earliest starting
 * at the new log start, and the refusal above the high watermark. Its own broker process.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class JavaDeleteRecordsInteropTest {
    private static OurBroker broker;

    @BeforeAll
    static void start() throws Exception {
        broker = new OurBroker("--durability", "group");
    }

    @AfterAll
    static void stop() throws Exception {
        if (broker != null) {
            broker.close();
        }
    }

    @Test
    void deleteRecordsMovesTheLogStart() throws Exception {
        Properties ap = new Properties();
        ap.put("bootstrap.servers", broker.bootstrap());
        ap.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        TopicPartition tp = new TopicPartition("jdr", 0);
        try (Admin a = Admin.create(ap)) {
            a.createTopics(List.of(new NewTopic("jdr", 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
            Properties pp = new Properties();
            pp.put("bootstrap.servers", broker.bootstrap());
            pp.put("acks", "all");
            try (KafkaProducer<String, String> p = new KafkaProducer<>(pp, new StringSerializer(), new StringSerializer())) {
                for (int i = 0; i < 10; i++) {
                    p.send(new ProducerRecord<>("jdr", 0, null, "v" + i)).get(30, TimeUnit.SECONDS);
                }
            }
            long low = a.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(7))).lowWatermarks().get(tp)
                    .get(30, TimeUnit.SECONDS).lowWatermark();
            assertEquals(7, low);
            assertEquals(7, a.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp)
                    .get(30, TimeUnit.SECONDS).offset());
            ExecutionException above = assertThrows(ExecutionException.class,
                    () -> a.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(11))).all().get(30, TimeUnit.SECONDS));
            assertEquals("OffsetOutOfRangeException", above.getCause().getClass().getSimpleName());

            Properties cp = new Properties();
            cp.put("bootstrap.servers", broker.bootstrap());
            cp.put("group.id", "jdr-group");
            cp.put("auto.offset.reset", "earliest");
            cp.put("enable.auto.commit", "false");
            try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp, new StringDeserializer(), new StringDeserializer())) {
                c.assign(List.of(tp));
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                ConsumerRecords<String, String> got = ConsumerRecords.empty();
                while (got.isEmpty() && System.nanoTime() < deadline) {
                    got = c.poll(Duration.ofMillis(500));
                }
                assertEquals(7, got.iterator().next().offset(), "first record after deleteRecords");
                assertEquals("v7", got.iterator().next().value());
            }
        }
    }
}
