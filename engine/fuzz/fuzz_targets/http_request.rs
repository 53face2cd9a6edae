//! The API's HTTP/1.1 requests through the real server (hyper plus our
//! limits, body reading and error answers), over an in-memory pipe and fed in
//! two pieces to exercise partial reads: answers, a refusal or a close, never
//! a panic and never a hang.
#![no_main]

use std::rc::Rc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ringcast_engine::control::http::{
    serve_connection, Handler, HttpLimits, Request, Response, ServeOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Echo;

impl Handler for Echo {
    async fn handle(&self, req: Request) -> Response {
        Response::text(200, "text/plain", req.body)
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let options = ServeOptions {
        limits: HttpLimits {
            header_bytes_max: 8192,
            headers_count_max: 64,
            body_bytes_max: 64 * 1024,
        },
        idle_timeout: Duration::from_millis(50),
        shutdown_grace: Duration::from_millis(50),
        connections_max: 4,
    };
    RUNTIME.with(|runtime| serve_once(runtime, data, split, options));
});

thread_local! {
    // One runtime for every input: building one per input would dominate the run. Its clock is
    // paused, so the idle deadlines pass as soon as nothing else can run.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
}

/// Writes `data` in two pieces to a server connection, closes the write side, and reads
/// whatever the server answers until it closes.
fn serve_once(runtime: &tokio::runtime::Runtime, data: &[u8], split: usize, options: ServeOptions) {
    let local = tokio::task::LocalSet::new();
    local.block_on(runtime, async {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let served = tokio::task::spawn_local(serve_connection(
            server,
            Rc::new(Echo),
            options,
            std::future::pending::<()>(),
        ));
        for piece in [&data[..split], &data[split..]] {
            if client.write_all(piece).await.is_err() {
                break;
            }
        }
        let _ = client.shutdown().await;
        let mut answers = Vec::new();
        let _ = client.read_to_end(&mut answers).await;
        let _ = served.await;
    });
}
