//! A short blob whose length prefix claims a huge string or byte string is
//! refused without allocating what it claims. The allocator of this test
//! binary records the largest single allocation.

// A counting allocator needs `unsafe`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// `[version, varint 512 MiB, 4 bytes]`: 10 bytes claiming 512 MiB.
fn bomb() -> Vec<u8> {
    let mut blob = vec![proto::codec::FORMAT_VERSION, 0xFC];
    blob.extend_from_slice(&(512u32 << 20).to_le_bytes());
    blob.extend_from_slice(&[0; 4]);
    assert_eq!(blob.len(), 10);
    blob
}

#[test]
fn a_short_blob_claiming_512_mib_is_refused_without_allocating_it() {
    let blob = bomb();
    LARGEST.store(0, Ordering::Relaxed);
    let as_string = proto::decode::<String>(&blob);
    let as_bytes = proto::decode::<Vec<u8>>(&blob);
    let as_heartbeat = proto::decode::<proto::heartbeat::Heartbeat>(&blob);
    let largest = LARGEST.load(Ordering::Relaxed);
    // A string is refused by the claim limit; a byte vector (a serde
    // sequence, read element by element) by the end of the input.
    for (what, result) in [
        ("string", as_string.map(|_| ())),
        ("heartbeat", as_heartbeat.map(|_| ())),
    ] {
        let e = result.expect_err(what).to_string();
        assert!(e.contains("claims more than the limit"), "{what}: {e}");
    }
    let e = as_bytes.expect_err("bytes").to_string();
    assert!(e.contains("UnexpectedEnd"), "bytes: {e}");
    // serde preallocates at most 1 MiB for a sequence whatever its claim.
    assert!(
        largest <= 1 << 20,
        "decoding a 10-byte blob allocated {largest} bytes at once"
    );
}
