package zerolog.seed;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The broker an interop test runs against, chosen by system properties (scripts/java-interop
 * sets them): {@code interop.target=ours} with {@code interop.broker=<path to the broker binary>},
 * or {@code interop.target=kafka} with {@code interop.kafkaPeer=<path to peers/kafka/kafka-peer>}
 * (Apache Kafka, the control). Both can be stopped and started again on the same data.
 */
abstract class BrokerUnderTest implements AutoCloseable {
    abstract String bootstrap();

    abstract void start() throws Exception;

    /** Stop cleanly and start again on the same data directory. */
    abstract void restart() throws Exception;

    @Override
    public abstract void close() throws Exception;

    static BrokerUnderTest fromProperties() throws IOException {
        String target = System.getProperty("interop.target", "");
        switch (target) {
            case "ours": {
                String bin = System.getProperty("interop.broker", "");
                if (bin.isEmpty() || !Files.isExecutable(Path.of(bin))) {
                    throw new IllegalStateException("interop.broker must name the built broker binary, got '" + bin + "'");
                }
                return new Ours(Path.of(bin));
            }
            case "kafka": {
                String peer = System.getProperty("interop.kafkaPeer", "");
                if (peer.isEmpty() || !Files.isExecutable(Path.of(peer))) {
                    throw new IllegalStateException("interop.kafkaPeer must name peers/kafka/kafka-peer, got '" + peer + "'");
                }
                return new Kafka(Path.of(peer));
            }
            default:
                throw new IllegalStateException("set -Dinterop.target=ours|kafka (scripts/java-interop does), got '" + target + "'");
        }
    }

    /** Our broker: the cargo-built binary on a free loopback port with a temporary data directory. */
    static final class Ours extends BrokerUnderTest {
        private final Path binary;
        private final Path dataDir;
        private final Path logFile;
        private final int port;
        private Process process;

        Ours(Path binary) throws IOException {
            this.binary = binary;
            this.dataDir = Files.createTempDirectory("zerolog-interop-");
            this.logFile = dataDir.resolveSibling(dataDir.getFileName() + ".log");
            try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
                this.port = s.getLocalPort();
            }
        }

        @Override
        String bootstrap() {
            return "127.0.0.1:" + port;
        }

        @Override
        void start() throws Exception {
            ProcessBuilder pb = new ProcessBuilder(List.of(binary.toString(), "--data-dir", dataDir.toString(),
                    "--listen", bootstrap(), "--durability", "group"));
            pb.redirectErrorStream(true);
            pb.redirectOutput(ProcessBuilder.Redirect.appendTo(logFile.toFile()));
            process = pb.start();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (System.nanoTime() < deadline) {
                if (!process.isAlive()) {
                    throw new IllegalStateException("broker exited with " + process.exitValue() + "; log: " + Files.readString(logFile));
                }
                try (Socket s = new Socket()) {
                    s.connect(new InetSocketAddress("127.0.0.1", port), 200);
                    return;
                } catch (IOException notYet) {
                    Thread.sleep(50);
                }
            }
            throw new IllegalStateException("broker did not listen on " + bootstrap() + " within 30 s");
        }

        void stop() throws Exception {
            if (process == null) {
                return;
            }
            process.destroy(); // SIGTERM: the broker flushes and exits
            if (!process.waitFor(30, TimeUnit.SECONDS)) {
                process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
                throw new IllegalStateException("broker did not exit within 30 s of SIGTERM");
            }
            int rc = process.exitValue();
            process = null;
            if (rc != 0) {
                throw new IllegalStateException("broker exited with " + rc + " on SIGTERM; log: " + Files.readString(logFile));
            }
        }

        @Override
        void restart() throws Exception {
            stop();
            start();
        }

        @Override
        public void close() throws Exception {
            try {
                stop();
            } finally {
                try (var walk = Files.walk(dataDir)) {
                    walk.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
                }
                Files.deleteIfExists(logFile);
            }
        }
    }

    /** Apache Kafka, single KRaft node, started and stopped through peers/kafka/kafka-peer. */
    static final class Kafka extends BrokerUnderTest {
        private final Path script;
        private String bootstrap;

        Kafka(Path script) {
            this.script = script;
        }

        private String run(String... args) throws Exception {
            ProcessBuilder pb = new ProcessBuilder();
            pb.command().add(script.toString());
            pb.command().addAll(List.of(args));
            pb.redirectErrorStream(true);
            Process p = pb.start();
            String out = new String(p.getInputStream().readAllBytes());
            if (!p.waitFor(300, TimeUnit.SECONDS) || p.exitValue() != 0) {
                throw new IllegalStateException("kafka-peer " + String.join(" ", args) + " failed:\n" + out);
            }
            return out.trim();
        }

        @Override
        String bootstrap() {
            return bootstrap;
        }

        @Override
        void start() throws Exception {
            run("start", "single");
            bootstrap = run("bootstrap", "single");
        }

        @Override
        void restart() throws Exception {
            run("restart", "single");
        }

        @Override
        public void close() throws Exception {
            run("stop", "single");
        }
    }
}
