fn main() -> std::process::ExitCode {
    fleet::cli::main()
}
