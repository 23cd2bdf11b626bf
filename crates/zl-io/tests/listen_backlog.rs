//! `sys::set_listen_backlog`: a listener whose accept thread does not run holds a burst of
//! connections in its queue (with the standard library's 128, the SYNs past it are dropped and
//! those connects wait for the client's retransmission).

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

#[test]
fn a_burst_of_connections_waits_in_the_accept_queue() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    zl_io::sys::set_listen_backlog(&l, 1_024).unwrap();
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    assert!(somaxconn >= 512, "net.core.somaxconn is {somaxconn}: this test needs at least 512");
    let addr = l.local_addr().unwrap();
    // Nothing accepts: every connection must complete from the queue alone.
    let mut held = Vec::new();
    for i in 0..400 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => held.push(s),
            Err(e) => panic!("connection {i} not queued (backlog not applied?): {e}"),
        }
    }
    // They are all there to accept.
    l.set_nonblocking(true).unwrap();
    let accepted = std::iter::from_fn(|| l.accept().ok()).take(400).count();
    assert_eq!(accepted, 400);
}
