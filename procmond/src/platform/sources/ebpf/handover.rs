//! Loading the probes in a short-lived process, so the collector never
//! holds the kernel's BTF.
//!
//! CO-RE loading parses /sys/kernel/btf/vmlinux: on Linux 6.18 that is
//! ~25 MiB of allocations for a moment, and the collector's peak RSS would
//! be set by it for its whole life (44.5 MiB against ~20 MiB steady). So
//! the `procmond` binary registers itself (`enable`), and loading starts
//! `procmond probe-loader`: that process loads and attaches exactly as
//! in-process loading does (`attach::load_and_attach`), then sends every
//! kernel object it holds (programs, maps, links, perf events, BTF, the
//! task iterator's link) back over a socket pair in one `SCM_RIGHTS`
//! message, with a header naming which descriptor is which, and exits.
//! The collector keeps the descriptors: the probes stay attached while it
//! holds them and detach when it drops them, as with aya's own objects.
//!
//! Without a registered binary (the library in tests and benchmarks), or
//! when the loader cannot be started or dies before answering (logged),
//! loading happens in-process. A load the loader ran and that failed is
//! the answer: its error comes back as text and is not retried here.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aya::Ebpf;
use aya::maps::Map;

use super::attach::{self, AttachKind, AttachMode, Attached, ProbeBuild};

/// The hidden command that runs the loader.
pub const COMMAND: &str = "probe-loader";
/// Most descriptors one hand-over carries (a load holds ~25).
const MAX_FDS: usize = 128;
/// The longest header; an error text is cut to fit.
const MAX_HEADER: usize = 64 * 1024;

static LOADER: OnceLock<PathBuf> = OnceLock::new();

/// Loads the probes through `exe probe-loader` from now on (the binary
/// passes `/proc/self/exe`, which runs even after an upgrade replaced it).
pub fn enable(exe: &Path) {
    let _ = LOADER.set(exe.to_path_buf());
}

/// The registered loader binary, if any.
pub fn loader() -> Option<&'static Path> {
    LOADER.get().map(PathBuf::as_path)
}

/// What the loader is asked to load: `attach::load_and_attach`'s inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoadRequest {
    pub ring_buffer_bytes: u32,
    pub mode: AttachMode,
    pub build: ProbeBuild,
    pub setuid_events: bool,
}

/// The loader's answer: which position in the descriptor list is which.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Header {
    result: Result<Layout, String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Layout {
    kind: AttachKind,
    build: ProbeBuild,
    events: usize,
    lost: usize,
    programs: Vec<usize>,
    iter_link: Option<usize>,
    count: usize,
}

/// Probes loaded by the loader, as the descriptors it handed over.
#[derive(Debug)]
pub struct Received {
    pub attached: Attached,
    pub events: OwnedFd,
    pub lost: OwnedFd,
    /// The programs' own descriptors (their fdinfo counts skipped runs).
    pub programs: Vec<OwnedFd>,
    /// A task-iterator link, where the iterator loaded.
    pub iter_link: Option<OwnedFd>,
    /// Everything else that keeps the probes attached (links, perf
    /// events, maps, BTF): dropped together at detach.
    pub held: Vec<OwnedFd>,
}

/// Why the loader gave no answer (then loading happens in-process).
#[derive(Debug, thiserror::Error)]
#[error("the probe loader ({exe}) gave no answer: {reason}")]
pub struct NoAnswer {
    exe: String,
    reason: String,
}

/// Runs the loader and receives what it loaded: `Err` when it could not
/// run or answer; `Ok(Err(text))` when it ran and the load failed.
pub fn load(exe: &Path, request: LoadRequest) -> Result<Result<Received, String>, NoAnswer> {
    let no_answer = |reason: String| NoAnswer {
        exe: exe.display().to_string(),
        reason,
    };
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| no_answer(format!("socketpair: {e}")))?;
    let mut child = std::process::Command::new(exe)
        .arg(COMMAND)
        .arg("--request")
        .arg(serde_json::to_string(&request).map_err(|e| no_answer(e.to_string()))?)
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| no_answer(format!("starting it: {e}")))?;
    let received = receive(&ours);
    let status = child.wait().map_err(|e| no_answer(e.to_string()))?;
    match received {
        Ok(Some((header, fds))) => {
            let descriptors = fds.len();
            let assembled = assemble(header, fds);
            if assembled.is_ok() {
                tracing::info!(
                    loader_pid = child.id(),
                    descriptors,
                    "probes handed over by the probe loader (the kernel's BTF was parsed there, not in this process)"
                );
            }
            Ok(assembled)
        }
        Ok(None) => Err(no_answer(format!("it exited ({status}) without a word"))),
        Err(e) => Err(no_answer(e)),
    }
}

/// One message: the header and its descriptors (`None` when the loader
/// closed the socket without sending).
fn receive(socket: &OwnedFd) -> Result<Option<(Header, Vec<OwnedFd>)>, String> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut bytes = vec![0u8; MAX_HEADER];
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match recvmsg(
            socket,
            &mut [std::io::IoSliceMut::new(&mut bytes)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other.map_err(|e| format!("recvmsg: {e}"))?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if msg
        .flags
        .intersects(rustix::net::ReturnFlags::CTRUNC | rustix::net::ReturnFlags::TRUNC)
    {
        return Err("the hand-over message was cut short".into());
    }
    let header = serde_json::from_slice(&bytes[..msg.bytes])
        .map_err(|e| format!("malformed hand-over header: {e}"))?;
    Ok(Some((header, fds)))
}

/// Sorts the descriptors by the header's layout.
fn assemble(header: Header, fds: Vec<OwnedFd>) -> Result<Received, String> {
    let layout = header.result?;
    if fds.len() != layout.count {
        return Err(format!(
            "the loader sent {} descriptors where its header counts {}",
            fds.len(),
            layout.count
        ));
    }
    let mut slots: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let mut take = |i: usize, what: &str| {
        slots
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| format!("the hand-over names no descriptor {i} for {what}"))
    };
    let events = take(layout.events, "EVENTS")?;
    let lost = take(layout.lost, "LOST")?;
    let programs = layout
        .programs
        .iter()
        .map(|&i| take(i, "a program"))
        .collect::<Result<Vec<_>, _>>()?;
    let iter_link = layout
        .iter_link
        .map(|i| take(i, "the iterator link"))
        .transpose()?;
    Ok(Received {
        attached: Attached {
            kind: layout.kind,
            build: layout.build,
        },
        events,
        lost,
        programs,
        iter_link,
        held: slots.into_iter().flatten().collect(),
    })
}

/// The loader process itself (`procmond probe-loader`): loads, answers on
/// its stdin (the socket), exits. The error is for its own exit status;
/// the collector has already been told.
pub fn serve(request: LoadRequest) -> Result<(), String> {
    let (header, fds, keep) = match attach::load_and_attach(
        request.ring_buffer_bytes,
        request.mode,
        request.build,
        request.setuid_events,
    ) {
        Ok((ebpf, attached, iter)) => {
            let (layout, fds, keep) = describe(ebpf, attached, iter)?;
            (Header { result: Ok(layout) }, fds, Some(keep))
        }
        Err(e) => (
            Header {
                result: Err(cut(e.to_string())),
            },
            Vec::new(),
            None,
        ),
    };
    send(std::io::stdin().as_fd().as_raw_fd(), &header, &fds)?;
    drop(keep); // the collector holds its own copies now
    match header.result {
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The header and the descriptors, as one message on `socket`.
fn send(socket: RawFd, header: &Header, fds: &[RawFd]) -> Result<(), String> {
    let bytes = serde_json::to_vec(header).map_err(|e| e.to_string())?;
    let mut control = Vec::new();
    if !fds.is_empty() {
        control.push(nix::sys::socket::ControlMessage::ScmRights(fds));
    }
    nix::sys::socket::sendmsg::<()>(
        socket,
        &[std::io::IoSlice::new(&bytes)],
        &control,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("sending the probes to the collector: {e}"))?;
    Ok(())
}

/// What the loader keeps open until the message is sent.
type Keep = (Ebpf, Option<super::iter::TaskIter>);

/// The loader's side of the layout: every BPF descriptor it holds, and
/// which of them are the ring buffer, the loss counter and the programs.
fn describe(
    ebpf: Ebpf,
    attached: Attached,
    iter: Option<super::iter::TaskIter>,
) -> Result<(Layout, Vec<RawFd>, Keep), String> {
    let before = kernel_object_fds();
    let iter = iter.and_then(|mut it| match it.attach_link() {
        Ok(()) => Some(it),
        Err(e) => {
            tracing::warn!(error = %e, "BPF task iterator unavailable: snapshots read procfs");
            None
        }
    });
    let fds = kernel_object_fds();
    if fds.len() > MAX_FDS {
        return Err(format!("{} descriptors: more than {MAX_FDS}", fds.len()));
    }
    let new: Vec<RawFd> = fds
        .iter()
        .copied()
        .filter(|fd| !before.contains(fd))
        .collect();
    let iter_link = match (iter.is_some(), new.as_slice()) {
        (true, [link]) => Some(*link),
        (true, _) => {
            return Err(format!(
                "attaching the iterator opened {} descriptors, not 1",
                new.len()
            ));
        }
        (false, _) => None,
    };
    let position = |fd: RawFd| fds.iter().position(|&f| f == fd);
    let map_fd = |name: &'static str| -> Result<usize, String> {
        let raw = match ebpf.map(name) {
            Some(Map::RingBuf(m) | Map::PerCpuArray(m)) => m.fd().as_fd().as_raw_fd(),
            _ => return Err(format!("map {name} is missing or has the wrong type")),
        };
        position(raw).ok_or_else(|| format!("map {name}'s descriptor is not open"))
    };
    let programs = ebpf
        .programs()
        .filter_map(|(_, p)| p.fd().ok())
        .filter_map(|fd| position(fd.as_fd().as_raw_fd()))
        .collect();
    let layout = Layout {
        kind: attached.kind,
        build: attached.build,
        events: map_fd("EVENTS")?,
        lost: map_fd("LOST")?,
        programs,
        iter_link: iter_link.and_then(position),
        count: fds.len(),
    };
    Ok((layout, fds, (ebpf, iter)))
}

/// This process's descriptors for kernel objects (anonymous inodes:
/// `bpf-prog`, `bpf-map`, `bpf_link`, `[perf_event]`, `btf`), in order.
fn kernel_object_fds() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    // The directory's own descriptor was in the listing and is closed now;
    // anything else (an inherited eventfd, say) is not the loader's to send.
    fds.retain(|fd| {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|target| {
            let target = target.to_string_lossy();
            target.strip_prefix("anon_inode:").is_some_and(|kind| {
                kind.starts_with("bpf") || kind == "btf" || kind == "[perf_event]"
            })
        })
    });
    fds
}

fn cut(mut text: String) -> String {
    let limit = MAX_HEADER / 2;
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};

    use super::*;

    fn request() -> LoadRequest {
        LoadRequest {
            ring_buffer_bytes: 1 << 20,
            mode: AttachMode::Auto,
            build: ProbeBuild::Auto,
            setuid_events: false,
        }
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
        socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("socketpair")
    }

    /// Distinct pipes, told apart afterwards by their inode.
    fn files(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| OwnedFd::from(std::io::pipe().expect("pipe").0))
            .collect()
    }

    fn inode(fd: &OwnedFd) -> u64 {
        rustix::fs::fstat(fd).expect("fstat").st_ino
    }

    fn layout(count: usize) -> Layout {
        Layout {
            kind: AttachKind::Btf { setuid_error: None },
            build: ProbeBuild::BpfLoop,
            events: 2,
            lost: 0,
            programs: vec![3],
            iter_link: Some(1),
            count,
        }
    }

    #[test]
    fn a_loader_that_cannot_start_gives_no_answer() {
        let Err(e) = load(Path::new("/nonexistent/procmond"), request()) else {
            panic!("a missing loader answered");
        };
        assert!(e.to_string().contains("starting it"), "{e}");
    }

    #[test]
    fn a_loader_that_exits_without_a_word_gives_no_answer() {
        let Err(e) = load(Path::new("/bin/true"), request()) else {
            panic!("/bin/true answered");
        };
        assert!(e.to_string().contains("without a word"), "{e}");
    }

    #[test]
    fn the_descriptors_arrive_sorted_by_the_header_and_the_rest_is_held() {
        let fds = files(5);
        let inodes: Vec<u64> = fds.iter().map(inode).collect();
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_fd().as_raw_fd()).collect();
        let (ours, theirs) = pair();
        let header = Header {
            result: Ok(layout(5)),
        };
        send(theirs.as_raw_fd(), &header, &raw).expect("send");
        let (header, received) = receive(&ours).expect("receive").expect("a message");
        let got = assemble(header, received).expect("assembled");
        assert_eq!(got.attached.build, ProbeBuild::BpfLoop);
        assert_eq!(inode(&got.events), inodes[2]);
        assert_eq!(inode(&got.lost), inodes[0]);
        assert_eq!(
            got.programs.iter().map(inode).collect::<Vec<_>>(),
            [inodes[3]]
        );
        assert_eq!(got.iter_link.as_ref().map(inode), Some(inodes[1]));
        assert_eq!(got.held.iter().map(inode).collect::<Vec<_>>(), [inodes[4]]);
    }

    #[test]
    fn a_header_that_miscounts_or_names_a_missing_descriptor_is_refused() {
        let fds = files(3);
        let Err(e) = assemble(
            Header {
                result: Ok(layout(4)),
            },
            fds,
        ) else {
            panic!("a miscount was accepted");
        };
        assert!(
            e.contains("sent 3 descriptors where its header counts 4"),
            "{e}"
        );
        let fds = files(3);
        let Err(e) = assemble(
            Header {
                result: Ok(layout(3)),
            },
            fds,
        ) else {
            panic!("a missing program descriptor was accepted");
        };
        assert!(e.contains("no descriptor 3 for a program"), "{e}");
    }

    #[test]
    fn a_failed_load_comes_back_as_its_text_and_a_closed_socket_as_nothing() {
        let (ours, theirs) = pair();
        let header = Header {
            result: Err("program handle_exec (sched_process_exec): refused".into()),
        };
        send(theirs.as_raw_fd(), &header, &[]).expect("send");
        let (header, fds) = receive(&ours).expect("receive").expect("a message");
        let Err(text) = assemble(header, fds) else {
            panic!("a failed load assembled");
        };
        assert_eq!(text, "program handle_exec (sched_process_exec): refused");
        drop(theirs);
        assert!(receive(&ours).expect("receive").is_none());
    }

    #[test]
    fn a_long_error_is_cut_to_fit_the_message() {
        let text = cut("é".repeat(MAX_HEADER));
        assert!(text.len() <= MAX_HEADER / 2 + 4, "{}", text.len());
        assert!(text.ends_with(" …"));
    }
}
