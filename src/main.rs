fn main() -> std::process::ExitCode {
    sparkwing::cmd::cli::main()
}
