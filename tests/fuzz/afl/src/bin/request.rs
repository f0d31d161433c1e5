fn main() {
    afl::fuzz!(|data: &[u8]| {
        tollgate_afl::request(data);
    });
}
