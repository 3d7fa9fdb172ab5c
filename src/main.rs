//! `advanced-token`: the demo server and the admin command line.
//! See `advanced-token --help`.

fn main() -> std::process::ExitCode {
    rocket_advanced_token::cli::run_binary()
}
