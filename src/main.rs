fn main() -> std::process::ExitCode {
    tgingest::cli::main()
}
