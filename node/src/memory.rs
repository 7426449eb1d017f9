//! Giving memory back to the system after a burst of work.

/// Returns memory the allocator keeps after frees to the system, where the allocator
/// allows it (glibc on Linux). A node that served thousands of documents to a new device
/// would otherwise keep that peak resident for as long as it runs.
pub(crate) fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` only walks glibc's own heap under its own locks; it has no
    // preconditions and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps the allocator's arenas at two. glibc gives every thread that allocates an arena of
/// its own (up to eight per core); memory freed in one arena is not reused by the others,
/// so a node whose work moves between tokio's threads keeps several peaks resident.
pub(crate) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only sets a glibc tunable; with `M_ARENA_MAX` it affects arenas
    // created from now on and is safe to call from any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
