//! Every decoder a datagram from the network reaches: the authenticated open, the envelope and
//! message parsers (also without the MAC, so the fuzzer gets past it), chunk reassembly, Nack
//! handling, and the gradient decoding. None may panic on any input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::auth::ClusterKey;
use protocol::codec::decode_gradient;
use protocol::transfer::{Outgoing, Reassembly, NACK_SPAN};
use protocol::wire::{Content, Datagram, Message};

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey([3; 32]);
    let _ = key.open(data);

    if let Ok(d) = Datagram::new_checked(data) {
        if let Ok(message) = Message::parse(d.kind(), d.payload()) {
            let mut buffer = [0u8; 8192];
            let mut bitmap = [0u8; 8];
            let mut r = Reassembly::new(&mut buffer[..], &mut bitmap[..]);
            match message {
                Message::Chunk(chunk) => {
                    if r.start(&chunk).is_ok() {
                        let _ = r.accept(&chunk);
                        let mut scratch = [0u8; NACK_SPAN / 8];
                        let _ = r.nack(&mut scratch);
                        let _ = r.data();
                    }
                }
                Message::Nack(nack) => {
                    let out = Outgoing::new(nack.transfer, Content::Model, 0, &data[..data.len().min(5000)]);
                    for i in out.requested(&nack) {
                        let _ = out.chunk(i);
                    }
                }
                _ => {}
            }
            let mut out = [0u8; 1472];
            let _ = message.emit(&mut out);
        }
    }

    let mut grads = [0i64; 64];
    let _ = decode_gradient(data, &mut grads);
});
