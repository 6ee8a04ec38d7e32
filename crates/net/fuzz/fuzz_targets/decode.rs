//! Any bytes: decode must not panic, and whatever it accepts must re-encode to the
//! same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = huione_net::decode(data) {
        let again = huione_net::encode(&msg).expect("a decoded message re-encodes");
        assert_eq!(again, data);
    }
});
