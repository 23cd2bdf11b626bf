package zerolog.seed;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.stereotype.Component;

@Component
public class TestListener {
    private static final Logger log = LoggerFactory.getLogger(TestListener.class);

    @KafkaListener(topics = "test")
    public void listen(ConsumerRecord<String, String> record) {
        log.info("received topic={} value={} offset={}", record.topic(), record.value(), record.offset());
    }
}
