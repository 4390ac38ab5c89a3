//! A nats-server child process for tests.
