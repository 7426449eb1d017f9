//! Giving memory back to the system after a burst of work.

/// After this many documents were unloaded, freed memory is handed back at the next sweep.
const TRIM_AFTER_UNLOADS: usize = 256;
/// Work since the last trim that makes going quiet worth a trim: inputs (peer frames,
/// local calls) handled.
const TRIM_AFTER_INPUTS: u64 = 64;
/// A sweep interval with at most this many inputs counts as quiet.
const QUIET_INPUTS: u64 = 4;

/// Decides when to hand freed memory back: after many documents were unloaded, or once
/// the node goes quiet after a burst of work (a device synced, a peer left). glibc keeps
/// what a burst freed, and an idle node would otherwise hold its peak for as long as it
/// runs; trimming at quiet sweeps only keeps the cost off busy periods.
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    unloaded: usize,
    inputs_since_trim: u64,
    inputs_this_sweep: u64,
}

impl Trimmer {
    /// Notes inputs handled.
    pub(crate) fn worked(&mut self, inputs: usize) {
        let inputs = inputs as u64;
        self.inputs_since_trim += inputs;
        self.inputs_this_sweep += inputs;
    }

    /// Notes documents unloaded.
    pub(crate) fn unloaded(&mut self, documents: usize) {
        self.unloaded += documents;
    }

    /// At a sweep: whether to trim now. Starts the next sweep interval.
    pub(crate) fn sweep(&mut self) -> bool {
        let quiet = self.inputs_this_sweep <= QUIET_INPUTS;
        let trim = self.unloaded >= TRIM_AFTER_UNLOADS
            || (quiet && self.inputs_since_trim >= TRIM_AFTER_INPUTS);
        self.inputs_this_sweep = 0;
        if trim {
            self.unloaded = 0;
            self.inputs_since_trim = 0;
        }
        trim
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_many_unloads_or_when_quiet_after_work() {
        let mut trimmer = Trimmer::default();
        // Nothing happened: nothing to give back.
        assert!(!trimmer.sweep());
        // A burst still going on: wait for it to end.
        trimmer.worked(500);
        assert!(!trimmer.sweep());
        // The next interval is quiet: trim once, then not again while idle.
        trimmer.worked(2);
        assert!(trimmer.sweep());
        assert!(!trimmer.sweep());
        // A little work now and then is not worth a trim.
        trimmer.worked(10);
        assert!(!trimmer.sweep());
        assert!(!trimmer.sweep());
        // Many unloads are, even while busy.
        trimmer.worked(100);
        trimmer.unloaded(300);
        assert!(trimmer.sweep());
    }
}
