//! Setup against a cluster that has just lost a node: the metadata still names the dead broker as
//! a partition's leader. Setup's start offsets refresh the metadata and follow the leader it names
//! now (here the engine, reached over TCP), instead of failing on the refused connection; with no
//! broker answering at all it gives up at its deadline, naming the topic, partitions and broker.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use loadgen::client::{prepare_topics, Conn, TopicLayout};
use loadgen::retry::start_offsets_following;

/// A loopback address nothing listens on (connections are refused).
fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn start_offsets_follow_the_leader_named_now_and_give_up_naming_the_broker() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = engine::broker::BrokerConfig::new(data.path().join("d"), "never".parse().unwrap());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let broker = engine::broker::Broker::start(cfg).unwrap();
    let live = broker.local_addr();
    let mut c = Conn::connect(live, Duration::from_secs(3)).unwrap();
    let topic = "setup-follows".to_string();
    let layouts = prepare_topics(&mut c, std::slice::from_ref(&topic), 3, Some(-1), Duration::from_secs(10)).unwrap();
    assert_eq!(layouts[0].leaders.len(), 3);
    let dead = dead_addr();
    // As a cluster right after a node died: partitions 0 and 2 still "led" by the dead broker.
    let mut stale = vec![TopicLayout { topic: topic.clone(), leaders: vec![(0, dead), (1, live), (2, dead)] }];
    // The dead broker first in the bootstrap list: the live one answers the Metadata.
    let offs = start_offsets_following(&loadgen::client::Connector::plaintext(), &[dead, live], &mut stale, Duration::from_secs(10)).unwrap();
    assert_eq!(offs, vec![vec![(0, 0), (1, 0), (2, 0)]]);
    assert_eq!(stale[0].leaders, vec![(0, live), (1, live), (2, live)], "the layout follows the leaders named now");

    // Nobody answers: bounded, and the error says which partitions, which broker, what failed.
    let mut gone = vec![TopicLayout { topic: topic.clone(), leaders: vec![(0, dead), (1, dead)] }];
    let t0 = Instant::now();
    let err = start_offsets_following(&loadgen::client::Connector::plaintext(), &[dead], &mut gone, Duration::from_millis(1500)).unwrap_err();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(10), "{took:?}");
    assert!(err.contains(&topic) && err.contains("[0, 1]") && err.contains(&dead.to_string()), "{err}");
    assert!(err.contains("cannot connect") && err.contains("metadata refresh"), "{err}");
    broker.shutdown().unwrap();
}
