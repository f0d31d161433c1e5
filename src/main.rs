//! The `tollgate` binary: parse the command line, hand over to `cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    tollgate::cli::main(args)
}
