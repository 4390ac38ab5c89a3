//! Sources that share a tail hand out the same deliveries: each event of the log is read,
//! parsed and decoded once for all of them.

use std::sync::Arc;

use crate::support::*;
use planledger_projections::{EventSource, LocalLogSource, SharedTail};
use planledger_store::Position;

/// Reads every delivery of the log through `source`, batch by batch.
async fn read_everything(
    source: &mut LocalLogSource,
    last: u64,
) -> Vec<planledger_projections::Delivery> {
    let mut out: Vec<planledger_projections::Delivery> = Vec::new();
    while out.last().map_or(0, |d| d.position.get()) < last {
        let after = Position(out.last().map_or(0, |d| d.position.get()));
        out.extend(source.next_batch(after, 5).await.expect("a batch"));
    }
    out
}

#[tokio::test]
async fn sources_sharing_a_tail_share_envelopes_and_decoded_events() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(dir.path());
    let plan = busy_plan("acme", "shared", 4);
    append_scripts(&store, &[&plan]).await;
    let last = store.last_position().get();
    assert!(last > 10, "the plan has events across several batches");

    let tail = SharedTail::new();
    let mut first = LocalLogSource::with_tail(store.clone(), tail.clone());
    let mut second = LocalLogSource::with_tail(store.clone(), tail);
    let mut alone = LocalLogSource::new(store.clone());
    let read_first = read_everything(&mut first, last).await;
    let read_second = read_everything(&mut second, last).await;
    let read_alone = read_everything(&mut alone, last).await;

    let positions = |d: &[planledger_projections::Delivery]| -> Vec<u64> {
        d.iter().map(|d| d.position.get()).collect()
    };
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(positions(&read_first), expected);
    assert_eq!(positions(&read_second), expected);
    assert_eq!(positions(&read_alone), expected);
    for ((a, b), c) in read_first.iter().zip(&read_second).zip(&read_alone) {
        assert!(
            Arc::ptr_eq(&a.envelope, &b.envelope),
            "position {}: the second source read the log again",
            a.position
        );
        assert!(
            !Arc::ptr_eq(&a.envelope, &c.envelope),
            "position {}: a source without the tail shares nothing",
            a.position
        );
        assert_eq!(a.envelope, c.envelope, "the same envelope either way");
        let decoded = a.event().expect("decodes");
        assert!(
            std::ptr::eq(decoded, b.event().expect("decodes")),
            "position {}: the event was decoded twice",
            a.position
        );
        assert_eq!(decoded, c.event().expect("decodes"));
    }
}
