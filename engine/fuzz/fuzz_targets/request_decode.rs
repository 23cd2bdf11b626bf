//! Request decoding of arbitrary bytes through the broker's own wire path: the input is a byte
//! stream of length-prefixed frames (`wire::read_frame`), each parsed with
//! `wire::parse_request_header` and, for a supported version, decoded with the protocol crate
//! for its api key (what the handlers do with `wire::decode_body`). Must never panic or abort.
//! It installs the broker's process allocator (io::sys::GuardedAlloc), which the broker binary
//! relies on to survive hostile array counts — so this target checks that defence too.
#![no_main]
use std::io::Cursor;

use bytes::Bytes;
use engine::wire;
use kafka_protocol::messages::RequestKind;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static GLOBAL: engine::io::sys::GuardedAlloc = engine::io::sys::GuardedAlloc;

fuzz_target!(|data: &[u8]| {
    let mut stream = Cursor::new(data);
    for _ in 0..16 {
        let Ok(frame) = wire::read_frame(&mut stream, 1 << 20) else { break };
        let mut buf = Bytes::from(frame);
        let Ok((api, header)) = wire::parse_request_header(&mut buf) else { continue };
        let v = header.request_api_version;
        let range = api.valid_versions();
        if v < range.min || v > range.max {
            continue;
        }
        let _ = RequestKind::decode(api, &mut buf, v);
    }
});
