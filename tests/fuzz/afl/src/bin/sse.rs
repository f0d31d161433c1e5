fn main() {
    afl::fuzz!(|data: &[u8]| {
        tollgate_afl::sse(data);
    });
}
