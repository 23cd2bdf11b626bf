package zerolog.seed;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.AppenderBase;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.slf4j.LoggerFactory;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.context.event.ApplicationPreparedEvent;
import org.springframework.context.ApplicationListener;
import org.springframework.context.ConfigurableApplicationContext;

/**
 * The seed application, unchanged, against the broker under test (BrokerUnderTest): N POSTs to
 * /test give N records logged by the listener, in order, with consecutive offsets; after the
 * broker restarts on the same data the running listener receives only what is produced after
 * the restart; after the application restarts, group testconsume resumes from its committed
 * offset. What the listener receives is read from its own log lines.
 */
class SeedApplicationInteropTest {
    private static final Pattern LINE = Pattern.compile("received topic=(\\S+) value=(\\S+) offset=(\\d+)");
    private static final Duration WAIT = Duration.ofSeconds(90);

    record Received(String topic, String value, long offset) {}

    /** Every line the listener logs, parsed. */
    static final List<Received> RECEIVED = new CopyOnWriteArrayList<>();

    static final class Capture extends AppenderBase<ILoggingEvent> {
        @Override
        protected void append(ILoggingEvent e) {
            Matcher m = LINE.matcher(e.getFormattedMessage());
            if (m.matches()) {
                RECEIVED.add(new Received(m.group(1), m.group(2), Long.parseLong(m.group(3))));
            }
        }
    }

    private static ConfigurableApplicationContext startApp(String bootstrap) {
        SpringApplication app = new SpringApplication(SeedApplication.class);
        // After Boot has configured logging and before the listener container starts.
        app.addListeners((ApplicationListener<ApplicationPreparedEvent>) e -> {
            Logger logger = (Logger) LoggerFactory.getLogger(TestListener.class);
            Capture c = new Capture();
            c.setName("interop-capture");
            c.setContext(logger.getLoggerContext());
            c.start();
            logger.detachAppender("interop-capture");
            logger.addAppender(c);
        });
        // Kafka clients log at INFO/WARN on every (re)connect and rebalance; the listener lines stay INFO.
        return app.run("--spring.kafka.bootstrap-servers=" + bootstrap, "--server.port=0",
                "--logging.level.org.apache.kafka=ERROR");
    }

    private static void post(HttpClient http, ConfigurableApplicationContext ctx, String message) throws Exception {
        String port = ctx.getEnvironment().getProperty("local.server.port");
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/test"))
                .timeout(Duration.ofSeconds(30))
                .POST(HttpRequest.BodyPublishers.ofString(message)).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), "POST /test " + message + ": " + r.body());
        assertEquals("sent: " + message, r.body());
    }

    /** Polls (bounded) until the listener has logged at least {@code n} records. */
    private static void awaitReceived(int n) throws InterruptedException {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (RECEIVED.size() < n) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("listener logged " + RECEIVED.size() + " records, expected " + n
                        + " within " + WAIT + ": " + RECEIVED);
            }
            Thread.sleep(20);
        }
    }

    private static List<Received> expected(List<String> values, long firstOffset) {
        List<Received> out = new ArrayList<>();
        for (int i = 0; i < values.size(); i++) {
            out.add(new Received("test", values.get(i), firstOffset + i));
        }
        return out;
    }

    @Test
    void seedApplicationProducesAndConsumesAcrossBrokerAndApplicationRestarts() throws Exception {
        final int n = Integer.getInteger("interop.records", 20);
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        List<String> sent = new ArrayList<>();
        try (BrokerUnderTest broker = BrokerUnderTest.fromProperties()) {
            broker.start();
            ConfigurableApplicationContext ctx = startApp(broker.bootstrap());
            try {
                // 1. N POSTs -> N records, in order, offsets 0..N-1 (fresh broker).
                for (int i = 0; i < n; i++) {
                    sent.add("before-restart-" + i);
                    post(http, ctx, sent.get(sent.size() - 1));
                }
                awaitReceived(n);
                assertEquals(expected(sent, 0), RECEIVED.subList(0, Math.min(RECEIVED.size(), n + 1)));

                // 2. Broker restarted on the same data; the running listener gets only what follows.
                broker.restart();
                List<String> after = new ArrayList<>();
                for (int i = 0; i < n / 2; i++) {
                    after.add("after-broker-restart-" + i);
                    post(http, ctx, after.get(i));
                }
                sent.addAll(after);
                awaitReceived(sent.size());
                assertEquals(expected(sent, 0), RECEIVED.subList(0, sent.size()),
                        "after the broker restart the listener must receive exactly the new records");
            } finally {
                ctx.close();
            }

            // 3. Application restarted: group testconsume resumes from its committed offset.
            ctx = startApp(broker.bootstrap());
            try {
                List<String> after = new ArrayList<>();
                for (int i = 0; i < n / 2; i++) {
                    after.add("after-app-restart-" + i);
                    post(http, ctx, after.get(i));
                }
                after.add("end");
                post(http, ctx, "end");
                sent.addAll(after);
                awaitReceived(sent.size());
                assertEquals(expected(sent, 0), RECEIVED,
                        "the restarted application must resume at the committed offset, nothing replayed or lost");
            } finally {
                ctx.close();
            }
        }
        assertTrue(RECEIVED.size() >= n);
    }
}
