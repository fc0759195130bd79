/// mimalloc instead of glibc malloc: under load glibc's malloc, free and consolidation took about
/// a third of the CPU profile (`perf record` during the loadtest), from many small short-lived
/// allocations per event (JSON, NATS headers, bincode buffers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tgingest::cli::main()
}
