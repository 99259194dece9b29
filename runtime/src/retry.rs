//! Program loads interrupted by a signal, tried again.
//!
//! The verifier checks for a pending signal between instructions and gives
//! up with EAGAIN when it finds one (a signal for the loading thread, or a
//! freeze of its cgroup), whatever the program. libbpf tries such a load up
//! to five times; so does the runtime, for every program it loads (the
//! dispatcher, the probes, users' programs and extensions). Any other
//! failure is returned at once.
use aya::programs::ProgramError;

/// How many times one program load is tried (libbpf's number).
const ATTEMPTS: u32 = 5;

/// Runs `load` until it succeeds, fails for another reason than an
/// interruption, or has been tried `ATTEMPTS` times.
pub(crate) fn prog_load<T>(
    what: &str,
    mut load: impl FnMut() -> Result<T, ProgramError>,
) -> Result<T, ProgramError> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(e) if attempt < ATTEMPTS && interrupted(&e) => {
                log::debug!("loading {what} was interrupted (EAGAIN); trying again");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Did the verifier stop because a signal was pending?
fn interrupted(e: &ProgramError) -> bool {
    matches!(e, ProgramError::LoadError { io_error, .. }
        if io_error.raw_os_error() == Some(libc::EAGAIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eagain() -> ProgramError {
        ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(libc::EAGAIN),
            verifier_log: aya_obj::VerifierLog::new(String::new()),
        }
    }

    #[test]
    fn an_interrupted_load_is_tried_again_up_to_five_times() {
        let mut calls = 0;
        let r = prog_load("p", || {
            calls += 1;
            if calls < 3 { Err(eagain()) } else { Ok(calls) }
        });
        assert_eq!(r.unwrap(), 3);
        let mut calls = 0;
        let r: Result<(), _> = prog_load("p", || {
            calls += 1;
            Err(eagain())
        });
        assert!(interrupted(&r.unwrap_err()));
        assert_eq!(calls, ATTEMPTS);
    }

    #[test]
    fn other_failures_are_not_tried_again() {
        let mut calls = 0;
        let r: Result<(), _> = prog_load("p", || {
            calls += 1;
            Err(ProgramError::LoadError {
                io_error: std::io::Error::from_raw_os_error(libc::EACCES),
                verifier_log: aya_obj::VerifierLog::new(String::new()),
            })
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
