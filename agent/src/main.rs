//! `bonker-agent`: see the library's `cli` module.

fn main() -> std::process::ExitCode {
    bonker_agent::cli::main()
}
