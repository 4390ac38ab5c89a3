//! A TCP proxy on loopback that can black-hole the traffic between a process and a server, for
//! the "cut off from NATS" tests: while cut, nothing is read from or written to either side (the
//! connections stay open, bytes wait in the kernel's buffers, as when a network path silently
//! drops packets), and once healed everything held flows again in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy; it stops (closing every connection) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Proxies a free loopback port to `target` (inside a tokio runtime).
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener.local_addr().expect("bound");
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            let mut pumps = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                wait_while_cut(&flag).await;
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                pumps.push(tokio::spawn(pump(client_read, server_write, flag.clone())));
                pumps.push(tokio::spawn(pump(server_read, client_write, flag.clone())));
            }
            for pump in pumps {
                pump.abort();
            }
        });
        Self { addr, cut, task }
    }

    /// The proxy's URL for a NATS client.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Black-holes the traffic from now on.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Lets the traffic (and what was held) flow again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_while_cut(cut: &AtomicBool) {
    while cut.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        wait_while_cut(&cut).await;
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just before a cut are held, not dropped: a TCP stream never loses data.
        wait_while_cut(&cut).await;
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
