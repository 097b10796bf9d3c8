//! A TCP proxy the test controls: it forwards bytes until frozen, then
//! holds the connections open without forwarding anything — a peer that
//! died without a FIN, as seen from the server.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub struct Proxy {
    pub address: SocketAddr,
    frozen: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
}

impl Proxy {
    /// Forwards connections made to `Proxy::address` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let frozen = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicBool::new(false));
        let (flag, cut_flag, held_flag) = (frozen.clone(), cut.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if cut_flag.load(Ordering::SeqCst) {
                    // Refused: closed at once, as a stopped server would.
                    continue;
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let flags = Flags {
                    frozen: flag.clone(),
                    cut: cut_flag.clone(),
                    held: held_flag.clone(),
                };
                tokio::spawn(pump(client_read, server_write, flags.clone()));
                tokio::spawn(pump(server_read, client_write, flags));
            }
        });
        Self {
            address,
            frozen,
            cut,
            held,
        }
    }

    /// Stops forwarding without losing a byte until [`Proxy::release`]: a
    /// network that stalls for a while and recovers.
    pub fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// Forwards again what [`Proxy::hold`] held back.
    pub fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
    }

    /// Closes every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Stops forwarding in both directions; sockets stay open.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

/// The switches the test flips, shared by every pump.
#[derive(Clone)]
struct Flags {
    frozen: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    flags: Flags,
) {
    let Flags { frozen, cut, held } = flags;
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if cut.load(Ordering::SeqCst) {
            return;
        }
        if held.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        if frozen.load(Ordering::SeqCst) {
            // Hold both sockets open, silently, until the test ends.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            () = tokio::time::sleep(Duration::from_millis(20)) => continue,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if frozen.load(Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
