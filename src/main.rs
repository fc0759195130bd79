// jemalloc: glibc malloc's arena locks and consolidation took ~30% of the node's CPU under load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tgingest::cli::main()
}
