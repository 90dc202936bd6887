fn main() -> std::process::ExitCode {
    sparkwing::cli::main()
}
