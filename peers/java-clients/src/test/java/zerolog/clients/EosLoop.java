package zerolog.clients;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * A read-process-write loop with the Java client, run as its own process by
 * {@link JavaTransactionsInteropTest} (so the test can kill it with SIGKILL): a read_committed
 * consumer (assign(), the group's committed offsets) on the input topic, a transactional
 * producer writing "out:" + value to the output topic, sendOffsetsToTransaction and commit per
 * poll; every abortEvery'th transaction is aborted and the consumer rewound. Exits 0 once every
 * input partition's committed offset reached its end.
 * Args: bootstrap in out group transactionalId abortEvery seconds
 */
public final class EosLoop {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], in = args[1], out = args[2], group = args[3], txnId = args[4];
        int abortEvery = Integer.parseInt(args[5]);
        long deadline = System.nanoTime() + Long.parseLong(args[6]) * 1_000_000_000L;
        Properties cp = new Properties();
        cp.put("bootstrap.servers", bootstrap);
        cp.put("group.id", group);
        cp.put("enable.auto.commit", "false");
        cp.put("auto.offset.reset", "earliest");
        cp.put("isolation.level", "read_committed");
        cp.put("max.poll.records", "50");
        Properties pp = new Properties();
        pp.put("bootstrap.servers", bootstrap);
        pp.put("transactional.id", txnId);
        pp.put("linger.ms", "5");
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp, new StringDeserializer(), new StringDeserializer());
                KafkaProducer<String, String> p = new KafkaProducer<>(pp, new StringSerializer(), new StringSerializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : c.partitionsFor(in, Duration.ofSeconds(30))) {
                tps.add(new TopicPartition(in, pi.partition()));
            }
            c.assign(tps);
            p.initTransactions();
            int txns = 0;
            while (System.nanoTime() < deadline) {
                ConsumerRecords<String, String> recs = c.poll(Duration.ofMillis(500));
                if (recs.isEmpty()) {
                    Map<TopicPartition, Long> ends = c.endOffsets(tps, Duration.ofSeconds(30));
                    Map<TopicPartition, OffsetAndMetadata> committed = c.committed(Set.copyOf(tps), Duration.ofSeconds(30));
                    boolean done = true;
                    for (TopicPartition tp : tps) {
                        OffsetAndMetadata om = committed.get(tp);
                        done &= om != null && om.offset() >= ends.get(tp);
                    }
                    if (done) {
                        System.out.println("eos done after " + txns + " transactions");
                        return;
                    }
                    continue;
                }
                Thread.sleep(30); // paces the loop so the test's kills land mid-run (a workload knob)
                p.beginTransaction();
                for (ConsumerRecord<String, String> r : recs) {
                    p.send(new ProducerRecord<>(out, r.key(), "out:" + r.value()));
                }
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (TopicPartition tp : recs.partitions()) {
                    offsets.put(tp, new OffsetAndMetadata(c.position(tp)));
                }
                p.sendOffsetsToTransaction(offsets, c.groupMetadata());
                txns++;
                if (abortEvery > 0 && txns % abortEvery == 0) {
                    p.abortTransaction();
                    Map<TopicPartition, OffsetAndMetadata> committed = c.committed(Set.copyOf(tps), Duration.ofSeconds(30));
                    for (TopicPartition tp : tps) {
                        OffsetAndMetadata om = committed.get(tp);
                        if (om != null) {
                            c.seek(tp, om.offset());
                        } else {
                            c.seekToBeginning(List.of(tp));
                        }
                    }
                } else {
                    p.commitTransaction();
                }
            }
            System.err.println("eos: not done in time");
            System.exit(3);
        }
    }
}
