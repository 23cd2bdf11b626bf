package zerolog.clients;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Our broker (the binary named by -Dinterop.broker) on a free loopback port and a fresh data dir. */
final class OurBroker implements AutoCloseable {
    private final Path dataDir;
    private final Path logFile;
    private final int port;
    private final Process process;

    OurBroker(String... extraArgs) throws Exception {
        this(freePort(), true, extraArgs);
    }

    /** A broker whose listeners `args` name (--listeners); `port` is the one waited for and bootstrap(). */
    static OurBroker withListeners(int port, String... args) throws Exception {
        return new OurBroker(port, false, args);
    }

    /** A free loopback port (for --listeners). */
    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    private OurBroker(int port, boolean listen, String... extraArgs) throws Exception {
        String bin = System.getProperty("interop.broker", "");
        if (bin.isEmpty() || !Files.isExecutable(Path.of(bin))) {
            throw new IllegalStateException("-Dinterop.broker must name the built broker binary (scripts/java-interop sets it), got '" + bin + "'");
        }
        dataDir = Files.createTempDirectory("zerolog-java-");
        logFile = dataDir.resolveSibling(dataDir.getFileName() + ".log");
        this.port = port;
        List<String> cmd = new java.util.ArrayList<>(List.of(bin, "--data-dir", dataDir.toString()));
        if (listen) {
            cmd.addAll(List.of("--listen", bootstrap()));
        }
        cmd.addAll(List.of(extraArgs));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(logFile.toFile()));
        process = pb.start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (true) {
            if (!process.isAlive()) {
                throw new IllegalStateException("broker exited with " + process.exitValue() + ": " + Files.readString(logFile));
            }
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress("127.0.0.1", port), 200);
                return;
            } catch (IOException notYet) {
                if (System.nanoTime() > deadline) {
                    close();
                    throw new IllegalStateException("broker did not listen on " + bootstrap() + " within 30 s");
                }
                Thread.sleep(50);
            }
        }
    }

    String bootstrap() {
        return "127.0.0.1:" + port;
    }

    String log() throws IOException {
        return Files.readString(logFile);
    }

    @Override
    public void close() throws Exception {
        process.destroy();
        boolean exited = process.waitFor(30, TimeUnit.SECONDS);
        if (!exited) {
            process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
        try (var walk = Files.walk(dataDir)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
        String log = Files.readString(logFile);
        Files.deleteIfExists(logFile);
        if (!exited || process.exitValue() != 0) {
            throw new IllegalStateException("broker did not shut down cleanly on SIGTERM (exit " + (exited ? process.exitValue() : "none")
                    + "); log:\n" + log);
        }
    }
}
