//! Exports of a real log in a temporary directory: NDJSON is the stored envelopes line by line,
//! Parquet holds the same events as typed rows in bounded row groups, and ranges and the tenant
//! filter select what they say.

use std::ops::ControlFlow;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampNanosecondType, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use planledger_export::{ExportError, ExportOptions, Format, Output, export, schema};
use planledger_store::{
    AppendMeta, AppendRequest, EventStore, ExpectedVersion, NewEvent, Position, StoreError,
    StoreOptions, StreamId,
};

/// A log of `rounds` rounds, each one append of `per_append` events to each of three streams
/// (two tenants); every other round carries a correlation id.
async fn log_with(rounds: u64, per_append: u64) -> (tempfile::TempDir, EventStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EventStore::open(dir.path().join("log"), StoreOptions::default()).expect("open");
    for n in 0..rounds {
        for stream in ["acme/q1", "globex/q1", "acme/q2"] {
            let mut meta = AppendMeta {
                actor: "ana".into(),
                ..AppendMeta::default()
            };
            if n % 2 == 0 {
                meta.correlation_id = Some(format!("corr-{n}"));
            }
            let events = (0..per_append)
                .map(|k| {
                    NewEvent::from_json(
                        "CheckInRecorded",
                        2,
                        jiff::Timestamp::now(),
                        &serde_json::json!({"goal_id": "g", "value": n * per_append + k, "note": "é \"q\""}),
                    )
                })
                .collect();
            store
                .append(AppendRequest {
                    stream: StreamId::new(stream).expect("stream id"),
                    expected: ExpectedVersion::Any,
                    events,
                    meta,
                })
                .await
                .expect("append");
        }
    }
    (dir, store)
}

fn options(format: Format) -> ExportOptions {
    ExportOptions {
        format,
        from: Position(1),
        to: None,
        tenant: None,
    }
}

fn stored(store: &EventStore, from: u64, to: u64) -> Vec<Vec<u8>> {
    (from..=to)
        .map(|p| store.read_raw(Position(p)).expect("read").expect("present"))
        .collect()
}

#[tokio::test]
async fn ndjson_is_the_stored_envelopes_one_per_line() {
    let (_dir, store) = log_with(4, 1).await;
    let mut out = Vec::new();
    let report = export(
        &store.view(),
        &options(Format::Ndjson),
        Output::Writer(&mut out),
        |_| {},
    )
    .expect("export");
    assert_eq!(report.events, 12);
    assert_eq!(report.first_position, Some(Position(1)));
    assert_eq!(report.last_position, Some(Position(12)));
    assert_eq!(report.through_position, Position(12));
    assert_eq!(report.bytes, out.len() as u64);
    let expected: Vec<u8> = stored(&store, 1, 12)
        .into_iter()
        .flat_map(|mut line| {
            line.push(b'\n');
            line
        })
        .collect();
    assert_eq!(out, expected);
}

#[tokio::test]
async fn ndjson_in_a_file_is_the_same_bytes_as_through_a_writer() {
    // Several MiB, so the file takes whole blocks (with direct I/O where the temp directory's
    // filesystem allows it) and a partial last one.
    let (dir, store) = log_with(4, 3_000).await;
    let mut streamed = Vec::new();
    let through_writer = export(
        &store.view(),
        &options(Format::Ndjson),
        Output::Writer(&mut streamed),
        |_| {},
    )
    .expect("export");
    let path = dir.path().join("events.ndjson");
    let mut file = std::fs::File::create(&path).expect("create");
    let in_file = export(
        &store.view(),
        &options(Format::Ndjson),
        Output::File(&mut file),
        |_| {},
    )
    .expect("export");
    assert!(streamed.len() > 3 * (4 << 20) && streamed.len() % 4096 != 0);
    assert_eq!(in_file, through_writer);
    assert_eq!(std::fs::read(&path).expect("read"), streamed);
}

#[tokio::test]
async fn a_range_and_a_tenant_select_what_they_name() {
    let (_dir, store) = log_with(4, 1).await;
    let mut out = Vec::new();
    let ranged = ExportOptions {
        from: Position(4),
        to: Some(Position(9)),
        tenant: Some("acme".into()),
        ..options(Format::Ndjson)
    };
    let report = export(&store.view(), &ranged, Output::Writer(&mut out), |_| {}).expect("export");
    // Positions 4..=9 are rounds 2 and 3: acme/q1, globex/q1, acme/q2 each.
    assert_eq!(report.events, 4);
    assert_eq!(report.first_position, Some(Position(4)));
    assert_eq!(report.last_position, Some(Position(9)));
    assert_eq!(report.through_position, Position(9));
    let text = String::from_utf8(out).expect("UTF-8");
    assert!(text.lines().all(|line| line.contains("\"stream\":\"acme/")));

    // Past the end: nothing, and the next export starts after the end.
    let past = ExportOptions {
        from: Position(40),
        ..options(Format::Ndjson)
    };
    let report = export(
        &store.view(),
        &past,
        Output::Writer(&mut std::io::sink()),
        |_| {},
    )
    .expect("export");
    assert_eq!((report.events, report.through_position), (0, Position(12)));

    let backwards = ExportOptions {
        from: Position(5),
        to: Some(Position(4)),
        ..options(Format::Ndjson)
    };
    let error = export(
        &store.view(),
        &backwards,
        Output::Writer(&mut std::io::sink()),
        |_| {},
    )
    .expect_err("empty");
    assert!(
        matches!(error, ExportError::EmptyRange { from: 5, to: 4 }),
        "{error}"
    );
}

#[tokio::test]
async fn parquet_rows_hold_the_envelopes_typed_in_row_groups() {
    // More than one row group: 3 * 10 appends of 5,000 events.
    let (dir, store) = log_with(10, 5_000).await;
    let file = dir.path().join("log.parquet");
    let mut seen = 0u64;
    let report = export(
        &store.view(),
        &options(Format::Parquet),
        Output::File(&mut std::fs::File::create(&file).expect("create")),
        |_| seen += 1,
    )
    .expect("export");
    assert_eq!(report.events, 150_000);
    assert_eq!(seen, 150_000, "progress hears of every position");
    assert_eq!(
        report.bytes,
        std::fs::metadata(&file).expect("metadata").len()
    );

    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).expect("open"))
            .expect("a Parquet file");
    assert_eq!(builder.metadata().num_row_groups(), 2);
    assert_eq!(
        builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>(),
        schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    );
    let mut position = 0u64;
    for batch in builder.build().expect("reader") {
        let batch = batch.expect("batch");
        let positions = batch
            .column_by_name("position")
            .expect("position")
            .as_primitive::<UInt64Type>();
        let recorded = batch
            .column_by_name("recorded_at")
            .expect("recorded_at")
            .as_primitive::<TimestampNanosecondType>();
        let tenants = batch
            .column_by_name("tenant")
            .expect("tenant")
            .as_string::<i32>();
        let correlation = batch
            .column_by_name("correlation_id")
            .expect("correlation_id")
            .as_string::<i32>();
        let data = batch
            .column_by_name("data")
            .expect("data")
            .as_string::<i32>();
        let hashes = batch
            .column_by_name("hash")
            .expect("hash")
            .as_string::<i32>();
        for row in 0..batch.num_rows() {
            position += 1;
            assert_eq!(positions.value(row), position);
            // Spot-check every 997th row against the log, field by field where typed.
            if position % 997 == 1 {
                let envelope = store
                    .read_position(Position(position))
                    .expect("read")
                    .expect("present");
                assert_eq!(
                    i128::from(recorded.value(row)),
                    envelope.recorded_at.as_nanosecond()
                );
                assert_eq!(
                    tenants.value(row),
                    envelope.stream.as_str().split('/').next().expect("tenant")
                );
                assert_eq!(correlation.is_null(row), envelope.correlation_id.is_none());
                assert_eq!(data.value(row), envelope.data.get());
                assert_eq!(hashes.value(row), envelope.hash);
            }
        }
    }
    assert_eq!(position, 150_000);
}

#[tokio::test]
async fn a_scan_of_the_view_the_export_reads_sees_each_position_once() {
    let (_dir, store) = log_with(2, 1).await;
    let mut positions = Vec::new();
    store
        .view()
        .scan_raw(Position(0), Position(u64::MAX - 1), |position, _| {
            positions.push(position.get());
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })
        .expect("scan");
    assert_eq!(positions, (1..=6).collect::<Vec<_>>());
}
