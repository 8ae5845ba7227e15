//! safe_path's rules on a real tree under /tmp (sticky, root-owned), with
//! files and links owned by another user where root can make them.

use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, lchown, symlink};

use super::*;

const NOBODY: u32 = 65534;

struct Tree(PathBuf);

impl Tree {
    fn new(tag: &str) -> Tree {
        let dir = std::env::temp_dir().join(format!("procmond-safe-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("tree");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Tree(dir)
    }

    fn dir(&self, name: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(&p).expect("dir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn root() -> bool {
    let yes = own_uid() == 0;
    if !yes {
        eprintln!("not root: cannot make files owned by others; skipped");
    }
    yes
}

#[test]
fn a_link_at_the_sink_path_is_refused_and_its_target_untouched() {
    let t = Tree::new("link");
    let victim = t.0.join("victim");
    std::fs::write(&victim, "root only\n").expect("victim");
    let sink = t.0.join("events.jsonl");
    symlink(&victim, &sink).expect("link");
    let e = open_append(&sink, 0o750).expect_err("a link");
    assert!(matches!(e, PathError::Symlink { .. }), "{e}");
    assert!(e.to_string().contains(&*sink.to_string_lossy()), "{e}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "root only\n"
    );
    // A hard link to it is refused as well.
    std::fs::remove_file(&sink).expect("rm");
    std::fs::hard_link(&victim, &sink).expect("hard link");
    let e = open_append(&sink, 0o750).expect_err("a hard link");
    assert!(matches!(e, PathError::Linked { links: 2, .. }), "{e}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "root only\n"
    );
}

#[test]
fn directories_others_can_write_are_refused_unless_sticky() {
    let t = Tree::new("dirs");
    let open = t.dir("open", 0o777);
    let e = open_append(&open.join("events.jsonl"), 0o750).expect_err("world-writable");
    assert!(e.to_string().contains("writable by other users"), "{e}");
    assert!(e.to_string().contains(&*open.to_string_lossy()), "{e}");
    let group = t.dir("group", 0o775);
    assert!(open_append(&group.join("x/events.jsonl"), 0o750).is_err());
    assert!(
        !group.join("x").exists(),
        "nothing created below a refused directory"
    );
    let sticky = t.dir("sticky", 0o1777);
    open_append(&sticky.join("events.jsonl"), 0o750).expect("sticky is fine");
    // ... but not what another user owns in it.
    let theirs = t.dir("sticky/theirs", 0o755);
    if root() {
        chown(&theirs, Some(NOBODY), None).expect("chown");
        let e = open_append(&theirs.join("events.jsonl"), 0o750).expect_err("owned by nobody");
        assert!(matches!(e, PathError::Owner { uid: NOBODY, .. }), "{e}");
    }
}

#[test]
fn missing_directories_are_made_with_the_exact_mode() {
    let t = Tree::new("make");
    let path = t.0.join("a/b/events.jsonl");
    let old = rustix::process::umask(Mode::from_raw_mode(0o077));
    let made = open_append(&path, 0o750);
    rustix::process::umask(old);
    made.expect("made");
    for d in ["a", "a/b"] {
        let mode = std::fs::metadata(t.0.join(d)).expect("dir").mode() & 0o7777;
        assert_eq!(mode, 0o750, "{d}");
    }
    assert_eq!(
        std::fs::metadata(&path).expect("file").mode() & 0o777,
        0o600
    );
}

#[test]
fn trusted_links_on_the_way_are_followed_and_others_refused() {
    let t = Tree::new("ancestors");
    let real = t.dir("real", 0o755);
    symlink(&real, t.0.join("via")).expect("link");
    let mut f = open_append(&t.0.join("via/events.jsonl"), 0o750).expect("root's link");
    std::io::Write::write_all(&mut f, b"x\n").expect("write");
    assert_eq!(
        std::fs::read_to_string(real.join("events.jsonl")).expect("file"),
        "x\n"
    );
    if root() {
        let sticky = t.dir("sticky", 0o1777);
        let theirs = sticky.join("theirs");
        symlink(&real, &theirs).expect("link");
        lchown(&theirs, Some(NOBODY), None).expect("lchown");
        let e = open_append(&theirs.join("events.jsonl"), 0o750).expect_err("nobody's link");
        assert!(matches!(e, PathError::Owner { uid: NOBODY, .. }), "{e}");
    }
    // A loop ends.
    symlink(t.0.join("loop"), t.0.join("loop")).expect("loop");
    let e = open_append(&t.0.join("loop/x"), 0o750).expect_err("loop");
    assert!(matches!(e, PathError::Loop { .. }), "{e}");
}

#[test]
fn binaries_must_be_root_owned_and_not_writable_by_others() {
    check_executable(Path::new("/bin/sh")).expect("/bin/sh through root's links");
    let t = Tree::new("bin");
    let bin = t.0.join("collector");
    std::fs::write(&bin, "#!/bin/sh\n").expect("bin");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    check_executable(&bin).expect("root's 0755 binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    let e = check_executable(&bin).expect_err("group-writable");
    assert!(matches!(e, PathError::Writable { .. }), "{e}");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let open = t.dir("open", 0o777);
    let link = t.0.join("link");
    let theirs = open.join("collector");
    std::fs::copy(&bin, &theirs).expect("copy");
    symlink(&theirs, &link).expect("link");
    let e = check_executable(&link).expect_err("a link into a directory anyone can write");
    assert!(e.to_string().contains(&*open.to_string_lossy()), "{e}");
    if root() {
        chown(&bin, Some(NOBODY), None).expect("chown");
        let e = check_executable(&bin).expect_err("owned by nobody");
        assert!(matches!(e, PathError::Owner { uid: NOBODY, .. }), "{e}");
    }
}
