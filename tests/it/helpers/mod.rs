#![allow(dead_code)]

pub mod client;
pub mod faults;
pub mod gateway;
pub mod proxy;
pub mod servers;
pub mod smtp;
pub mod teams;
pub mod upstream;

/// Reads a file of `tests/fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
