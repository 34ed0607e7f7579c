//! Running one call on a thread with a stack of its own size: for parsers that recurse
//! as deep as their input nests, when the input may nest deeper than the caller's stack.

/// Runs `f` on a new thread named `name` with a `stack_bytes` stack and returns what it
/// returns; a panic in `f` goes on in the caller. Only the stack pages `f` touches are
/// ever mapped, so a large reservation costs address space, not memory. `None` when the
/// thread cannot be started (the process is out of threads or address space).
pub(crate) fn on_deep_stack<T: Send>(
    name: &str,
    stack_bytes: usize,
    f: impl FnOnce() -> T + Send,
) -> Option<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .stack_size(stack_bytes)
            .spawn_scoped(scope, f)
            .ok()?;
        Some(
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        )
    })
}
