//! A TCP proxy between the gateway and a real server (PostgreSQL) that a test can cut and
//! restore, to play an outage of the network or the server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct TcpProxy {
    pub addr: SocketAddr,
    /// `None` while cut; else the token that ends the connections of this period.
    up: Arc<Mutex<Option<CancellationToken>>>,
}

impl TcpProxy {
    /// Listens on a random port of 127.0.0.1 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = TcpProxy {
            addr: listener.local_addr().expect("proxy address"),
            up: Arc::new(Mutex::new(Some(CancellationToken::new()))),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                // While cut, a new connection is closed at once, as a dead server's would be.
                let Some(period) = p.period() else { continue };
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = period.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        proxy
    }

    /// Closes every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        if let Some(period) = self.lock().take() {
            period.cancel();
        }
    }

    pub fn restore(&self) {
        self.lock().get_or_insert_with(CancellationToken::new);
    }

    fn period(&self) -> Option<CancellationToken> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CancellationToken>> {
        self.up.lock().unwrap_or_else(|e| e.into_inner())
    }
}
