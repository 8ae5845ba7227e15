//! Why the audit source cannot run, in words an operator can act on. Pure
//! (the errno is classified by the caller, with FreeBSD's numbers), so the
//! wording is tested on Linux.

/// How auditon(2) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auditon {
    /// ENOSYS: a kernel without `options AUDIT`, or any jailed caller
    /// (sys_auditon returns ENOSYS for `jailed(td->td_ucred)` before it
    /// looks at anything else).
    NoSys,
    /// EPERM: no PRIV_AUDIT_CONTROL.
    Perm,
    Other,
}

/// The reason for an auditon(2) failure; `jailed` is
/// `security.jail.jailed` when it could be read.
pub fn auditon_failed(how: Auditon, jailed: Option<bool>, error: &str) -> String {
    match (how, jailed) {
        (Auditon::NoSys, Some(true)) => "running inside a jail: audit(4) cannot be used from a jail (auditon(2) answers ENOSYS to jailed processes); run the collector on the host".into(),
        (Auditon::NoSys, Some(false)) => {
            "this kernel has no audit support (options AUDIT): auditon(2) answered ENOSYS".into()
        }
        (Auditon::NoSys, None) => "auditon(2) answered ENOSYS: either this process is inside a jail (audit cannot be used from one) or the kernel has no audit support (options AUDIT); security.jail.jailed could not be read to tell".into(),
        (Auditon::Perm, _) => format!(
            "auditon(2) refused: {error} (it needs PRIV_AUDIT_CONTROL: root, and no MAC policy denying it)"
        ),
        (Auditon::Other, _) => format!("auditon(A_GETCOND): {error}"),
    }
}
