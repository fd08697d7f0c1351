//! A static file server on 127.0.0.1 (axum + tower-http's ServeDir), as
//! booter's nginx serves `/os/...` to the CN.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

/// Serves a directory until dropped.
#[derive(Debug)]
pub struct HttpServer {
    pub addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl HttpServer {
    pub fn serve_dir(dir: &Path) -> anyhow::Result<HttpServer> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).context("binding 127.0.0.1")?;
        let addr = listener.local_addr().context("local addr")?;
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(HttpServer { addr, _rt: rt })
    }

    /// The URL a QEMU user-mode guest uses for `path` (10.0.2.2 is the host).
    pub fn guest_url(&self, path: &str) -> String {
        format!("http://10.0.2.2:{}/{}", self.addr.port(), path.trim_start_matches('/'))
    }
}
