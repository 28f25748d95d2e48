//! Any bytes as what reaches the gateway from a client or an upstream server: split into
//! newline-delimited frames and server-sent events under a size limit, each message classified
//! as JSON-RPC (one message or a batch), edited as a raw object and written back, and the id of
//! an oversized prefix salvaged. Must never panic.
#![no_main]

use std::sync::OnceLock;
use truststack_gateway::framing::{read_frame, Frame, SseParser};
use truststack_gateway::jsonrpc::{self, RawObject};

/// Small, so the oversized-message path is reached too.
const MAX: usize = 4096;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn message(text: &str) {
    if jsonrpc::is_batch(text) {
        if let Ok(elements) = jsonrpc::batch_elements(text) {
            for el in elements {
                let _ = jsonrpc::parse(el.get());
            }
        }
    } else if let Ok(m) = jsonrpc::parse(text) {
        if let Some(id) = &m.id {
            let _ = id.to_value();
            let _ = jsonrpc::with_id(text, id);
        }
        let _ = jsonrpc::param::<serde_json::Value>(m.params, "arguments");
    }
    if let Ok(mut obj) = RawObject::parse(text) {
        obj.set_json("_meta", &serde_json::json!({"fuzz": true}));
        obj.remove("id");
        let _ = serde_json::from_str::<serde_json::Value>(&obj.to_text());
    }
    let _ = jsonrpc::one_line(text);
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let mut reader = tokio::io::BufReader::with_capacity(64, data);
        loop {
            match read_frame(&mut reader, MAX).await {
                Ok(Frame::Line(text)) => message(&text),
                Ok(Frame::TooLong { prefix, .. }) => {
                    let _ = jsonrpc::sniff_id(&prefix);
                }
                Ok(Frame::NotUtf8) => {}
                Ok(Frame::Eof) | Err(_) => break,
            }
        }
    });
    let mut sse = SseParser::new(MAX);
    for chunk in data.chunks(97) {
        for event in sse.feed(chunk) {
            message(&event.data);
        }
    }
});
