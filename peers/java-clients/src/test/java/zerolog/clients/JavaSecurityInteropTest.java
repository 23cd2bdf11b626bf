package zerolog.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.admin.UserScramCredentialsDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.errors.ClusterAuthorizationException;
import org.apache.kafka.common.errors.SaslAuthenticationException;
import org.apache.kafka.common.errors.TopicAuthorizationException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * SASL and ACLs (issue 18) with the Java client over a SASL_PLAINTEXT listener: PLAIN from the
 * --sasl-users file, SCRAM-SHA-256 / -512 users created through AlterUserScramCredentials and
 * then logged in with, wrong passwords failing with SaslAuthenticationException, ACL-allowed
 * produce / consume / group use working and denied ones failing with the authorization error,
 * CreateAcls / DescribeAcls / DeleteAcls through the AdminClient. Its own broker process:
 * --authorizer, super user User:admin. Every wait is bounded.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class JavaSecurityInteropTest {
    static OurBroker broker;
    static Path work;
    static final String ALLOWED = "jsec-allowed";
    static final String DENIED = "jsec-denied";

    @BeforeAll
    static void startBroker() throws Exception {
        work = Files.createTempDirectory("zerolog-java-sec-");
        Path users = work.resolve("users");
        Files.writeString(users, "PLAIN admin admin-secret\nPLAIN alice alice-secret\n");
        int plain = OurBroker.freePort();
        int sasl = OurBroker.freePort();
        broker = OurBroker.withListeners(sasl, "--durability", "group",
                "--listeners", "PLAINTEXT://127.0.0.1:" + plain + ",SASL_PLAINTEXT://127.0.0.1:" + sasl,
                "--sasl-users", users.toString(), "--authorizer", "--super-users", "User:admin");
        try (Admin a = admin("admin", "admin-secret", "PLAIN")) {
            a.createTopics(List.of(new NewTopic(ALLOWED, 1, (short) 1), new NewTopic(DENIED, 1, (short) 1)))
                    .all().get(30, TimeUnit.SECONDS);
            // SCRAM users made through AlterUserScramCredentials (the file has none).
            List<UserScramCredentialAlteration> up = List.of(
                    new UserScramCredentialUpsertion("bob", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), "bob-secret"),
                    new UserScramCredentialUpsertion("carol", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), "carol-secret"));
            a.alterUserScramCredentials(up).all().get(30, TimeUnit.SECONDS);
        }
    }

    @AfterAll
    static void stopBroker() throws Exception {
        if (broker != null) {
            broker.close();
            broker = null;
        }
        if (work != null) {
            try (var walk = Files.walk(work)) {
                walk.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }

    static Properties sasl(String user, String password, String mechanism) {
        Properties p = new Properties();
        p.put("bootstrap.servers", broker.bootstrap());
        p.put("security.protocol", "SASL_PLAINTEXT");
        p.put("sasl.mechanism", mechanism);
        String module = mechanism.equals("PLAIN") ? "org.apache.kafka.common.security.plain.PlainLoginModule"
                : "org.apache.kafka.common.security.scram.ScramLoginModule";
        p.put("sasl.jaas.config", module + " required username=\"" + user + "\" password=\"" + password + "\";");
        return p;
    }

    static Admin admin(String user, String password, String mechanism) {
        Properties p = sasl(user, password, mechanism);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return Admin.create(p);
    }

    static KafkaProducer<String, String> producer(String user, String password, String mechanism) {
        return producer(user, password, mechanism, new Properties());
    }

    static KafkaProducer<String, String> producer(String user, String password, String mechanism, Properties extra) {
        Properties p = sasl(user, password, mechanism);
        p.putAll(extra);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "20000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<String, String> consumer(String user, String password, String mechanism, String group) {
        Properties p = sasl(user, password, mechanism);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        return new KafkaConsumer<>(p);
    }

    /** The throwable or one of its causes is an instance of `type`. */
    static boolean causedBy(Throwable t, Class<? extends Throwable> type) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (type.isInstance(c)) {
                return true;
            }
        }
        return false;
    }

    static void expectFailure(Class<? extends Throwable> type, ThrowingRunnable r) {
        try {
            r.run();
        } catch (Throwable t) {
            assertTrue(causedBy(t, type), "expected " + type.getSimpleName() + ", got " + t);
            return;
        }
        fail("expected " + type.getSimpleName() + ", nothing was thrown");
    }

    interface ThrowingRunnable {
        void run() throws Exception;
    }

    static List<AclBinding> userAcls(String user) {
        String principal = "User:" + user;
        return List.of(
                new AclBinding(new ResourcePattern(ResourceType.TOPIC, ALLOWED, PatternType.PREFIXED),
                        new AccessControlEntry(principal, "*", AclOperation.WRITE, AclPermissionType.ALLOW)),
                new AclBinding(new ResourcePattern(ResourceType.TOPIC, ALLOWED, PatternType.PREFIXED),
                        new AccessControlEntry(principal, "*", AclOperation.READ, AclPermissionType.ALLOW)),
                new AclBinding(new ResourcePattern(ResourceType.GROUP, "jg-" + user, PatternType.LITERAL),
                        new AccessControlEntry(principal, "*", AclOperation.READ, AclPermissionType.ALLOW)));
    }

    /** Produce, consume in a group, and be denied the other topic, as `user`. */
    void allowedAndDenied(String user, String password, String mechanism) throws Exception {
        try (Admin a = admin("admin", "admin-secret", "PLAIN")) {
            a.createAcls(userAcls(user)).all().get(30, TimeUnit.SECONDS);
        }
        try (KafkaProducer<String, String> p = producer(user, password, mechanism)) {
            for (int i = 0; i < 3; i++) {
                p.send(new ProducerRecord<>(ALLOWED, user, user + "-" + i)).get(30, TimeUnit.SECONDS);
            }
            expectFailure(TopicAuthorizationException.class,
                    () -> p.send(new ProducerRecord<>(DENIED, user, "no")).get(30, TimeUnit.SECONDS));
        }
        try (KafkaConsumer<String, String> c = consumer(user, password, mechanism, "jg-" + user)) {
            c.subscribe(List.of(ALLOWED));
            List<String> mine = new ArrayList<>();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (mine.size() < 3 && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) {
                    if (user.equals(r.key())) {
                        mine.add(r.value());
                    }
                }
            }
            assertEquals(List.of(user + "-0", user + "-1", user + "-2"), mine);
            c.commitSync(Duration.ofSeconds(30));
        }
        try (KafkaConsumer<String, String> c = consumer(user, password, mechanism, null)) {
            c.assign(List.of(new TopicPartition(DENIED, 0)));
            expectFailure(TopicAuthorizationException.class, () -> {
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (System.nanoTime() < deadline) {
                    c.poll(Duration.ofMillis(500));
                }
            });
        }
        // A group without an ACL: the group is refused.
        try (KafkaConsumer<String, String> c = consumer(user, password, mechanism, "other-" + user)) {
            c.subscribe(List.of(ALLOWED));
            expectFailure(org.apache.kafka.common.errors.GroupAuthorizationException.class, () -> {
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (System.nanoTime() < deadline) {
                    c.poll(Duration.ofMillis(500));
                }
            });
        }
    }

    @Test
    void plainUserFromTheFile() throws Exception {
        allowedAndDenied("alice", "alice-secret", "PLAIN");
    }

    @Test
    void scramSha256UserMadeThroughTheAdminApi() throws Exception {
        allowedAndDenied("bob", "bob-secret", "SCRAM-SHA-256");
    }

    @Test
    void scramSha512UserMadeThroughTheAdminApi() throws Exception {
        allowedAndDenied("carol", "carol-secret", "SCRAM-SHA-512");
    }

    @Test
    void scramCredentialsAreDescribed() throws Exception {
        try (Admin a = admin("admin", "admin-secret", "PLAIN")) {
            Map<String, UserScramCredentialsDescription> d =
                    a.describeUserScramCredentials(List.of("bob", "carol")).all().get(30, TimeUnit.SECONDS);
            assertEquals(List.of(new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)), d.get("bob").credentialInfos());
            assertEquals(List.of(new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)), d.get("carol").credentialInfos());
        }
    }

    @Test
    void wrongPasswordsFailWithAnAuthenticationError() throws Exception {
        String[][] cases = {{"alice", "PLAIN"}, {"bob", "SCRAM-SHA-256"}, {"carol", "SCRAM-SHA-512"}, {"nobody", "SCRAM-SHA-256"}};
        for (String[] c : cases) {
            try (Admin a = admin(c[0], "wrong", c[1])) {
                expectFailure(SaslAuthenticationException.class, () -> a.describeCluster().clusterId().get(30, TimeUnit.SECONDS));
            }
            try (KafkaProducer<String, String> p = producer(c[0], "wrong", c[1])) {
                expectFailure(SaslAuthenticationException.class,
                        () -> p.send(new ProducerRecord<>(ALLOWED, "k", "v")).get(30, TimeUnit.SECONDS));
            }
        }
    }

    @Test
    void aclsAreCreatedDescribedAndDeleted() throws Exception {
        List<AclBinding> dave = userAcls("dave");
        try (Admin a = admin("admin", "admin-secret", "PLAIN")) {
            a.createAcls(dave).all().get(30, TimeUnit.SECONDS);
            AclBindingFilter daves = new AclBindingFilter(ResourcePatternFilter.ANY,
                    new AccessControlEntryFilter("User:dave", null, AclOperation.ANY, AclPermissionType.ANY));
            Collection<AclBinding> described = a.describeAcls(daves).values().get(30, TimeUnit.SECONDS);
            assertEquals(new java.util.HashSet<>(dave), new java.util.HashSet<>(described));

            AclBindingFilter writes = new AclBindingFilter(new ResourcePatternFilter(ResourceType.TOPIC, ALLOWED, PatternType.PREFIXED),
                    new AccessControlEntryFilter("User:dave", null, AclOperation.WRITE, AclPermissionType.ALLOW));
            Collection<AclBinding> deleted = a.deleteAcls(List.of(writes)).all().get(30, TimeUnit.SECONDS);
            assertEquals(List.of(dave.get(0)), new ArrayList<>(deleted));
            Collection<AclBinding> left = a.describeAcls(daves).values().get(30, TimeUnit.SECONDS);
            assertEquals(2, left.size(), left.toString());
            assertFalse(left.contains(dave.get(0)));
        }
        // A user without Alter on the cluster may not create ACLs.
        try (Admin a = admin("alice", "alice-secret", "PLAIN")) {
            expectFailure(ClusterAuthorizationException.class, () -> a.createAcls(userAcls("mallory")).all().get(30, TimeUnit.SECONDS));
        }
    }

    @Test
    void deletingTheWriteAclDeniesTheNextProduce() throws Exception {
        // erin: a SCRAM-SHA-256 user with Write on the allowed topics, then without it.
        try (Admin a = admin("admin", "admin-secret", "PLAIN")) {
            a.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion("erin",
                    new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), "erin-secret"))).all().get(30, TimeUnit.SECONDS);
            a.createAcls(userAcls("erin")).all().get(30, TimeUnit.SECONDS);
        }
        try (KafkaProducer<String, String> p = producer("erin", "erin-secret", "SCRAM-SHA-256")) {
            p.send(new ProducerRecord<>(ALLOWED, "erin", "before")).get(30, TimeUnit.SECONDS);
        }
        try (Admin a = admin("admin", "admin-secret", "PLAIN")) {
            a.deleteAcls(List.of(userAcls("erin").get(0).toFilter())).all().get(30, TimeUnit.SECONDS);
        }
        // Idempotent (the default): without Write on any topic nor IdempotentWrite on the
        // cluster, InitProducerId is refused (KIP-679), as Kafka.
        try (KafkaProducer<String, String> p = producer("erin", "erin-secret", "SCRAM-SHA-256")) {
            expectFailure(ClusterAuthorizationException.class,
                    () -> p.send(new ProducerRecord<>(ALLOWED, "erin", "after")).get(30, TimeUnit.SECONDS));
        }
        Properties plain = new Properties();
        plain.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        plain.put(ProducerConfig.ACKS_CONFIG, "1");
        try (KafkaProducer<String, String> p = producer("erin", "erin-secret", "SCRAM-SHA-256", plain)) {
            expectFailure(TopicAuthorizationException.class,
                    () -> p.send(new ProducerRecord<>(ALLOWED, "erin", "after")).get(30, TimeUnit.SECONDS));
        }
    }
}
