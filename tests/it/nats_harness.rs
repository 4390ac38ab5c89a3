//! The nats-server harness: a restart keeps the port and the JetStream store.

use async_nats::jetstream;
use planledger_e2e::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_its_port_and_its_streams() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let client = async_nats::connect(&url)
        .await
        .expect("the server accepts clients");
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: "HARNESS".into(),
        subjects: vec!["harness.>".into()],
        ..Default::default()
    })
    .await
    .expect("JetStream is enabled");
    js.publish("harness.one", "kept".into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    nats.stop();
    assert!(!nats.is_running());
    nats.restart();
    assert!(nats.is_running());
    assert_eq!(nats.url(), url, "same port after a restart");

    let client = async_nats::connect(&url).await.expect("the server is back");
    let js = jetstream::new(client);
    let mut stream = js.get_stream("HARNESS").await.expect("the stream survived");
    assert_eq!(stream.info().await.expect("info").state.messages, 1);
}
