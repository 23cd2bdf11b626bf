package zerolog.clients;

import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * A group.protocol=consumer member in its own JVM, for JavaConsumerProtocolInteropTest to kill
 * (SIGKILL: no leave). Args: bootstrap group topic. Prints "PARTS n" whenever its assignment
 * changes and "READ value" for each record once its offset is committed; runs until killed
 * (or 120 s, a bound should the test not kill it).
 */
public final class ConsumerProtocolVictim {
    public static void main(String[] args) {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, args[1]);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "B");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        long end = System.nanoTime() + Duration.ofSeconds(120).toNanos();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer())) {
            c.subscribe(List.of(args[2]));
            int parts = -1;
            while (System.nanoTime() < end) {
                var records = c.poll(Duration.ofMillis(50));
                if (!records.isEmpty()) {
                    c.commitSync(Duration.ofSeconds(30));
                    for (ConsumerRecord<String, String> r : records) {
                        System.out.println("READ " + r.value());
                    }
                }
                if (c.assignment().size() != parts) {
                    parts = c.assignment().size();
                    System.out.println("PARTS " + parts);
                }
                System.out.flush();
            }
        }
    }
}
