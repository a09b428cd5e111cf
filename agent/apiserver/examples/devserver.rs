//! Serve the API over plain HTTP on 127.0.0.1 for kubectl experiments and tests.
//!
//! `cargo run -p cairn-apiserver --example devserver -- DATA_DIR [PORT]` prints
//! `listening on http://127.0.0.1:PORT` once ready (PORT 0 or absent: any free port).
//! Point kubectl at it with `--server http://127.0.0.1:PORT` or a kubeconfig.

use std::sync::Arc;

use cairn_apiserver::handlers::watch::WatchConfig;
use cairn_apiserver::{Api, Server};
use cairn_store::{SqliteOptions, SqliteStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: devserver DATA_DIR [PORT]")?;
    let port: u16 = args.next().map_or(Ok(0), |p| p.parse())?;
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(
        std::path::Path::new(&dir).join("state.db"),
        SqliteOptions::default(),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let server = Server {
            api: Api::new(Arc::new(store)),
            watch: WatchConfig::default(),
        };
        cairn_apiserver::serve(listener, server, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        Ok(())
    })
}
