//! The API's HTTP/1.1 requests, fed in two pieces to exercise partial
//! reads: requests, a clear error, or "need more", never a panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringcast_engine::control::http::{HttpLimits, RequestParser};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut parser = RequestParser::new(HttpLimits {
        header_bytes_max: 8192,
        headers_count_max: 64,
        body_bytes_max: 64 * 1024,
    });
    let mut buf = BytesMut::new();
    for piece in [&data[..split], &data[split..]] {
        buf.extend_from_slice(piece);
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(_request)) => continue,
                Ok(None) => break,
                Err(_error) => return,
            }
        }
    }
});
