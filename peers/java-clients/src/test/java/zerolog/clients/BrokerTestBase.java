package zerolog.clients;

import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/**
 * The setup the interop test classes share: one broker process per test class (group
 * durability), its bootstrap properties and an AdminClient. Test classes run one after another
 * (surefire's default), each with its own broker.
 */
abstract class BrokerTestBase {
    static OurBroker broker;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = new OurBroker("--durability", "group");
    }

    @AfterAll
    static void stopBroker() throws Exception {
        if (broker != null) {
            broker.close();
            broker = null;
        }
    }

    static Properties common() {
        Properties p = new Properties();
        p.put("bootstrap.servers", broker.bootstrap());
        return p;
    }

    static Admin admin() {
        Properties p = common();
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return Admin.create(p);
    }
}
