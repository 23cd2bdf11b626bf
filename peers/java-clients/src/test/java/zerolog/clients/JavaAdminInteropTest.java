package zerolog.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.AlterConfigsOptions;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The Java AdminClient (kafka-clients 4.x) against the broker's admin APIs: DeleteGroups,
 * OffsetDelete, DescribeConfigs, IncrementalAlterConfigs, CreatePartitions, DescribeLogDirs.
 * Its own broker process.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class JavaAdminInteropTest extends BrokerTestBase {

    static String cause(ExecutionException e) {
        return e.getCause().getClass().getSimpleName();
    }

    @Test
    void groupOffsetsAndGroupsAreDeleted() throws Exception {
        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic("jadm", 2, (short) 1))).all().get(30, TimeUnit.SECONDS);
            TopicPartition p0 = new TopicPartition("jadm", 0);
            TopicPartition p1 = new TopicPartition("jadm", 1);
            a.alterConsumerGroupOffsets("jg", Map.of(p0, new OffsetAndMetadata(5), p1, new OffsetAndMetadata(6)))
                    .all().get(30, TimeUnit.SECONDS);
            a.deleteConsumerGroupOffsets("jg", Set.of(p0)).all().get(30, TimeUnit.SECONDS);
            Map<TopicPartition, OffsetAndMetadata> left =
                    a.listConsumerGroupOffsets("jg").partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
            assertFalse(left.containsKey(p0) && left.get(p0) != null, "deleted offset still listed: " + left);
            assertEquals(6, left.get(p1).offset());

            a.deleteConsumerGroups(List.of("jg")).all().get(30, TimeUnit.SECONDS);
            ExecutionException again = assertThrows(ExecutionException.class,
                    () -> a.deleteConsumerGroups(List.of("jg")).all().get(30, TimeUnit.SECONDS));
            assertEquals("GroupIdNotFoundException", cause(again));
        }
    }

    @Test
    void configsArePartitionsGrowAndLogDirsAreDescribed() throws Exception {
        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic("jcfg", 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
            ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, "jcfg");
            Config c = a.describeConfigs(List.of(r)).all().get(30, TimeUnit.SECONDS).get(r);
            ConfigEntry retention = c.get("retention.ms");
            assertEquals("604800000", retention.value());
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, retention.source());
            assertEquals("delete", c.get("cleanup.policy").value());
            ConfigResource missing = new ConfigResource(ConfigResource.Type.TOPIC, "jmissing");
            ExecutionException unknown = assertThrows(ExecutionException.class,
                    () -> a.describeConfigs(List.of(missing)).all().get(30, TimeUnit.SECONDS));
            assertEquals("UnknownTopicOrPartitionException", cause(unknown));

            a.createPartitions(Map.of("jcfg", NewPartitions.increaseTo(3))).all().get(30, TimeUnit.SECONDS);
            assertEquals(3, a.describeTopics(List.of("jcfg")).allTopicNames().get(30, TimeUnit.SECONDS)
                    .get("jcfg").partitions().size());
            ExecutionException shrink = assertThrows(ExecutionException.class,
                    () -> a.createPartitions(Map.of("jcfg", NewPartitions.increaseTo(2))).all().get(30, TimeUnit.SECONDS));
            assertEquals("InvalidPartitionsException", cause(shrink));

            Map<String, LogDirDescription> dirs = a.describeLogDirs(List.of(0)).allDescriptions()
                    .get(30, TimeUnit.SECONDS).get(0);
            assertEquals(1, dirs.size());
            LogDirDescription d = dirs.values().iterator().next();
            assertTrue(d.replicaInfos().containsKey(new TopicPartition("jcfg", 2)), "log dirs: " + d.replicaInfos().keySet());
        }
    }

    static Config describe(Admin a, String topic) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        return a.describeConfigs(List.of(r)).all().get(30, TimeUnit.SECONDS).get(r);
    }

    @Test
    void topicConfigsAreCreatedDescribedAndAlteredIncrementally() throws Exception {
        try (Admin a = admin()) {
            NewTopic t = new NewTopic("jtc", 1, (short) 1).configs(Map.of("segment.bytes", "2048", "max.message.bytes", "3000"));
            org.apache.kafka.clients.admin.CreateTopicsResult created = a.createTopics(List.of(t));
            created.all().get(30, TimeUnit.SECONDS);
            // CreateTopics v5+ answers the created topic's configuration.
            assertEquals("2048", created.config("jtc").get(30, TimeUnit.SECONDS).get("segment.bytes").value());
            Config c = describe(a, "jtc");
            assertEquals("2048", c.get("segment.bytes").value());
            assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("segment.bytes").source());
            assertFalse(c.get("segment.bytes").isReadOnly());
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, c.get("retention.ms").source());

            ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, "jtc");
            // validateOnly: checked, not applied.
            a.incrementalAlterConfigs(Map.of(r, List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "1"), AlterConfigOp.OpType.SET))),
                    new AlterConfigsOptions().validateOnly(true)).all().get(30, TimeUnit.SECONDS);
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, describe(a, "jtc").get("retention.ms").source());
            a.incrementalAlterConfigs(Map.of(r, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "60000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("max.message.bytes", ""), AlterConfigOp.OpType.DELETE))))
                    .all().get(30, TimeUnit.SECONDS);
            c = describe(a, "jtc");
            assertEquals("60000", c.get("retention.ms").value());
            assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("retention.ms").source());
            assertEquals("1048588", c.get("max.message.bytes").value());
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, c.get("max.message.bytes").source());

            // APPEND on a list key: compaction is served (crates/zl-log/src/cleaner.rs) and joins delete.
            a.incrementalAlterConfigs(Map.of(r, List.of(
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND))))
                    .all().get(30, TimeUnit.SECONDS);
            String policy = describe(a, "jtc").get("cleanup.policy").value();
            assertTrue(policy.contains("compact") && policy.contains("delete"), policy);
            ExecutionException badPolicy = assertThrows(ExecutionException.class, () -> a.incrementalAlterConfigs(Map.of(r, List.of(
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "shred"), AlterConfigOp.OpType.SET))))
                    .all().get(30, TimeUnit.SECONDS));
            assertEquals("InvalidConfigurationException", cause(badPolicy));
            assertTrue(badPolicy.getCause().getMessage().contains("cleanup.policy"), badPolicy.getCause().getMessage());
            ExecutionException badSize = assertThrows(ExecutionException.class, () -> a.incrementalAlterConfigs(Map.of(r, List.of(
                    new AlterConfigOp(new ConfigEntry("segment.bytes", "4294967296"), AlterConfigOp.OpType.SET))))
                    .all().get(30, TimeUnit.SECONDS));
            assertEquals("InvalidConfigurationException", cause(badSize));
            assertEquals("2048", describe(a, "jtc").get("segment.bytes").value());
        }
    }
}
