fn main() -> std::process::ExitCode {
    sparkwing::util::return_large_buffers();
    sparkwing::cmd::cli::main()
}
