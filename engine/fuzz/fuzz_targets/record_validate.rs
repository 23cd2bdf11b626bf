//! Record batch v2 validation on arbitrary bytes: never panics; what it accepts is consistent.
#![no_main]
use engine::record::{self, BATCH_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a batch size limit, so the bound checks are exercised too.
    let max = match data.first() {
        Some(b) if b & 1 == 1 => 64 + (*b as usize) * 8,
        _ => 1 << 20,
    };
    let _ = record::declared_size(data);
    let _ = record::parse_header(data, max);
    if let Ok(infos) = record::validate_all(data, max) {
        let total: usize = infos.iter().map(|i| i.size_bytes).sum();
        assert_eq!(total, data.len(), "validate_all must cover the buffer exactly");
        for i in &infos {
            assert!(i.record_count >= 1 && i.last_offset_delta == i.record_count - 1);
            assert!(i.size_bytes >= BATCH_HEADER_BYTES && i.size_bytes <= max);
        }
    }
    if let Ok(info) = record::validate(data, max) {
        // Offset assignment patches fields outside the CRC: the batch stays valid.
        let mut b = data[..info.size_bytes].to_vec();
        record::patch_base_offset(&mut b, 1 << 40);
        record::patch_leader_epoch(&mut b, 7);
        let again = record::validate(&b, max).expect("patched batch must stay valid");
        assert_eq!(again.base_offset, 1 << 40);
        assert_eq!(again.size_bytes, info.size_bytes);
    }
});
