//! The archive rules, tested once: building ([`pack_dir`]), inspecting on
//! upload ([`inspect`]) and unpacking on install ([`unpack`]), against one
//! corpus of hostile archives that both must refuse, naming the entry,
//! without writing anything outside the destination.

use std::fs;
use std::path::Path;

use depmgr::Error;
use depmgr::archive::{FIXED_MTIME, Inspection, Limits, check_identity, inspect, pack_dir, unpack};
use testkit::raw_tar::{EntryType, Raw, gzip};

const MANIFEST_TEXT: &str = "name = \"web\"\nversion = \"1.0.0\"\ncommand = \"bin/web\"\n";

fn ok_base() -> Raw {
    Raw::new()
        .file("manifest.toml", MANIFEST_TEXT.as_bytes())
        .dir("bin/")
        .exec("bin/web", b"#!/bin/sh\n")
}

fn check(bytes: &[u8]) -> depmgr::Result<Inspection> {
    inspect(bytes, &Limits::default())
}

/// Every file, directory and link below `dir`, as sorted relative paths.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).expect("below").display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

// ------------------------------------------------------------ hostile corpus

/// One hostile archive: what it tries, its bytes, and what the error must
/// say (the entry's name included).
struct Hostile {
    what: &'static str,
    bytes: Vec<u8>,
    needle: String,
}

fn corpus(abs: &str) -> Vec<Hostile> {
    let h = |what, raw: Raw, needle: &str| Hostile {
        what,
        bytes: raw.gz(),
        needle: needle.to_string(),
    };
    vec![
        h(
            "dot-dot",
            ok_base().file("../escaped.txt", b"x"),
            "archive entry \"../escaped.txt\" escapes the package root",
        ),
        h(
            "inner dot-dot",
            ok_base().file("bin/../../escaped.txt", b"x"),
            "archive entry \"bin/../../escaped.txt\" escapes",
        ),
        h(
            "deep dot-dot",
            ok_base().file("a/../../../../../escaped.txt", b"x"),
            "archive entry \"a/../../../../../escaped.txt\" escapes",
        ),
        h(
            "absolute path",
            ok_base().file(abs, b"x"),
            &format!("archive entry {abs:?} is an absolute path"),
        ),
        h(
            "absolute symlink",
            ok_base().symlink("etc", "/etc"),
            "symlink \"etc\" points outside the package (\"/etc\")",
        ),
        h(
            "symlink up and out",
            ok_base().symlink("bin/x", "../../etc"),
            "symlink \"bin/x\" points outside",
        ),
        h(
            "symlink chain out",
            ok_base()
                .symlink("bin/up", "..")
                .symlink("bin/out", "up/.."),
            "symlink \"bin/out\" points outside",
        ),
        h(
            // Each link lexically inside, the chain outside.
            "symlink chain through a directory",
            ok_base()
                .dir("x")
                .dir("x/y")
                .symlink("x/b", "..")
                .symlink("x/y/a", "../b/.."),
            "symlink \"x/y/a\" points outside",
        ),
        h(
            "symlink loop",
            ok_base().symlink("a", "b").symlink("b", "a"),
            "symlink \"a\" is part of a symlink loop",
        ),
        h(
            "write through a symlink",
            ok_base()
                .symlink("lnk", "/tmp")
                .file("lnk/escaped.txt", b"x"),
            "archive entry \"lnk/escaped.txt\" lies below symlink \"lnk\"",
        ),
        h(
            "write through a symlink to the root",
            ok_base().symlink("l", ".").file("l/escaped.txt", b"x"),
            "archive entry \"l/escaped.txt\" lies below symlink \"l\"",
        ),
        h(
            "symlink over an earlier directory",
            ok_base().file("d/f", b"x").symlink("d", "/tmp"),
            "archive entry \"d/f\" lies below symlink \"d\"",
        ),
        h(
            "hard link out",
            ok_base().hard_link("h", "../../etc/passwd"),
            "hard link \"h\" points outside the package",
        ),
        h(
            "absolute hard link",
            ok_base().hard_link("h", "/etc/passwd"),
            "hard link \"h\" points outside the package",
        ),
        h(
            "hard link to nothing",
            ok_base().hard_link("h", "missing"),
            "hard link \"h\" points to \"missing\", which is not a regular file",
        ),
        h(
            "hard link to a symlink",
            ok_base().symlink("s", "bin/web").hard_link("h", "s"),
            "hard link \"h\" points to \"s\", which is not a regular file",
        ),
        h(
            "hard link to a directory",
            ok_base().hard_link("h", "bin"),
            "hard link \"h\" points to \"bin\", which is not a regular file",
        ),
        h(
            "fifo",
            ok_base().entry(EntryType::Fifo, "f", "", b""),
            "archive entry \"f\" has unsupported type",
        ),
        h(
            "character device",
            ok_base().entry(EntryType::Char, "null", "", b""),
            "archive entry \"null\" has unsupported type",
        ),
        h(
            "block device",
            ok_base().entry(EntryType::Block, "sda", "", b""),
            "archive entry \"sda\" has unsupported type",
        ),
        h(
            "huge entry",
            ok_base().file("zeros", &vec![0u8; 2 << 20]),
            "archive entry \"zeros\" holds 2097152 bytes: the archive unpacks to more than 1048576 bytes",
        ),
        h(
            "duplicate file",
            ok_base().file("bin/web", b"again"),
            "archive entry \"bin/web\" appears twice",
        ),
    ]
}

#[test]
fn hostile_archives_are_refused_by_inspect_and_unpack_alike() {
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        ..Limits::default()
    };
    let abs = format!(
        "/tmp/depmgr-archive-test-{}/escaped.txt",
        std::process::id()
    );
    // The base passes both, so each case fails for its hostile entry only.
    check(&ok_base().gz()).expect("the base is a good archive");
    let tmp = tempfile::tempdir().expect("tmp");
    unpack(&ok_base().gz()[..], &tmp.path().join("base"), &limits).expect("base unpacks");

    for case in corpus(&abs) {
        let what = case.what;
        let inspected = inspect(&case.bytes[..], &limits).expect_err(what);
        assert!(
            matches!(inspected, Error::BadRequest(_)),
            "{what}: {inspected:?}"
        );
        assert!(
            inspected.to_string().contains(&case.needle),
            "{what}: inspect said {inspected:?}, not {:?}",
            case.needle
        );

        // box/in/pkg: everything the archive aims at lies in box or above.
        let tmp = tempfile::tempdir().expect("tmp");
        let inside = tmp.path().join("box").join("in");
        fs::create_dir_all(&inside).expect("mkdir");
        let dest = inside.join("pkg");
        let unpacked = unpack(&case.bytes[..], &dest, &limits).expect_err(what);
        assert_eq!(
            unpacked.to_string(),
            inspected.to_string(),
            "{what}: unpack and inspect disagree"
        );
        assert_eq!(
            listing(tmp.path()),
            ["box", "box/in"],
            "{what}: something was written (or left half-unpacked)"
        );
        assert!(!Path::new(&abs).exists(), "{what}: wrote {abs}");
    }
}

#[test]
fn garbage_and_broken_gzip_are_refused_by_both() {
    let data = ok_base().file("data", &[1u8; 100_000]).gz();
    let mut corrupt = data.clone();
    let at = corrupt.len() - 5; // inside the CRC32/ISIZE trailer
    corrupt[at] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "empty"),
        ("not gzip", b"not gzip at all".to_vec(), "not gzip"),
        ("gzip of garbage", gzip(&[7u8; 5000]), "not a valid .tar.gz"),
        (
            "truncated",
            data[..data.len() - 6].to_vec(),
            "not a valid .tar.gz",
        ),
        ("corrupt trailer", corrupt, "not a valid .tar.gz"),
    ];
    for (what, bytes, needle) in cases {
        let err = check(&bytes).expect_err(what);
        assert!(err.to_string().contains(needle), "{what}: {err}");
        let tmp = tempfile::tempdir().expect("tmp");
        let err = unpack(&bytes[..], &tmp.path().join("pkg"), &Limits::default()).expect_err(what);
        assert!(err.to_string().contains(needle), "{what}: {err}");
        assert!(listing(tmp.path()).is_empty(), "{what}: left files behind");
    }
}

// ------------------------------------------------------------------ unpack

#[test]
fn good_archive_unpacks_with_links_inside() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("p").join("pkg");
    let bytes = Raw::new()
        .dir("./")
        .file("./manifest.toml", b"name = \"x\"")
        .dir("bin")
        .exec("bin/run", b"#!/bin/sh\n")
        .symlink("bin/alias", "run")
        .symlink("lib/up", "../bin/run")
        .hard_link("bin/copy", "bin/run")
        .gz();
    let got = unpack(&bytes[..], &dest, &Limits::default()).expect("unpack");
    assert_eq!(got.entries, 7);
    for link in ["bin/alias", "lib/up", "bin/copy"] {
        assert_eq!(fs::read(dest.join(link)).expect(link), b"#!/bin/sh\n");
    }
    assert!(
        fs::symlink_metadata(dest.join("bin/alias"))
            .expect("meta")
            .file_type()
            .is_symlink()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dest.join("bin/run"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit kept");
    assert_eq!(listing(&tmp.path().join("p")).len(), 8, "no staging left");

    // The destination must not exist yet.
    let err = unpack(&bytes[..], &dest, &Limits::default()).expect_err("exists");
    assert!(err.to_string().contains("cannot unpack into"), "{err}");
}

/// The modes in the headers are not trusted: setuid, setgid, sticky and
/// group/world write bits never reach the disk, for files and directories.
#[test]
fn hostile_modes_are_masked_on_unpack() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("pkg");
    let bytes = ok_base()
        .entry_with_mode(EntryType::Directory, "open/", "", b"", 0o7777)
        .entry_with_mode(EntryType::Regular, "open/suid", "", b"#!/bin/sh\n", 0o4777)
        .entry_with_mode(EntryType::Regular, "open/sgid", "", b"x", 0o2666)
        .entry_with_mode(EntryType::Regular, "open/sticky", "", b"x", 0o1644)
        .gz();
    unpack(&bytes[..], &dest, &Limits::default()).expect("unpack");
    let mode = |p: &str| {
        fs::symlink_metadata(dest.join(p))
            .expect(p)
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("open/suid"), depmgr::archive::EXEC_MODE, "0o4777 file");
    assert_eq!(mode("open/sgid"), depmgr::archive::FILE_MODE, "0o2666 file");
    assert_eq!(
        mode("open/sticky"),
        depmgr::archive::FILE_MODE,
        "0o1644 file"
    );
    assert_eq!(mode("open"), depmgr::archive::DIR_MODE, "0o7777 directory");
    assert_eq!(mode("bin/web"), 0o755, "an executable stays executable");
    assert_eq!(mode("manifest.toml"), 0o644);
    assert_eq!(mode("."), depmgr::archive::DIR_MODE, "the package root");
    for p in ["open/suid", "open/sgid", "open/sticky", "open", "."] {
        assert_eq!(
            mode(p) & 0o7022,
            0,
            "{p}: special or group/world-write bits survived"
        );
    }
}

#[test]
fn a_hard_link_may_come_before_its_file() {
    // inspect accepts links in any order, so unpack does too.
    let tmp = tempfile::tempdir().expect("tempdir");
    let bytes = ok_base()
        .hard_link("early", "late")
        .file("late", b"data")
        .gz();
    check(&bytes).expect("inspect accepts it");
    let dest = tmp.path().join("pkg");
    unpack(&bytes[..], &dest, &Limits::default()).expect("unpack");
    assert_eq!(fs::read(dest.join("early")).expect("read"), b"data");
}

// ----------------------------------------------------------------- inspect

#[test]
fn accepts_a_good_archive() {
    let got = check(&ok_base().gz()).expect("good");
    assert_eq!(got.manifest.name, "web");
    assert_eq!(got.entries, 3);
}

#[test]
fn refuses_each_broken_package_rule_naming_it() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no manifest",
            Raw::new().file("bin/web", b"x").gz(),
            "no manifest.toml",
        ),
        (
            "nested manifest",
            Raw::new()
                .file("web/manifest.toml", MANIFEST_TEXT.as_bytes())
                .gz(),
            "it must be at the root",
        ),
        (
            "bad manifest",
            Raw::new().file("manifest.toml", b"name = 1").gz(),
            "invalid manifest",
        ),
        (
            "manifest is a link",
            Raw::new().symlink("manifest.toml", "bin/web").gz(),
            "must be a regular file",
        ),
        (
            "command missing",
            Raw::new()
                .file("manifest.toml", MANIFEST_TEXT.as_bytes())
                .gz(),
            "command \"bin/web\"",
        ),
        (
            "command is a dir",
            Raw::new()
                .file("manifest.toml", MANIFEST_TEXT.as_bytes())
                .entry(EntryType::Directory, "bin/web/", "", b"")
                .gz(),
            "command",
        ),
    ];
    for (what, bytes, needle) in cases {
        let err = check(&bytes).expect_err(what);
        assert!(matches!(err, Error::BadRequest(_)), "{what}: {err:?}");
        assert!(err.to_string().contains(needle), "{what}: {err}");
    }
}

#[test]
fn symlinks_inside_are_fine_and_the_command_may_use_them() {
    let text = "name = \"web\"\nversion = \"1.0.0\"\ncommand = \"run\"\n";
    let bytes = Raw::new()
        .file("manifest.toml", text.as_bytes())
        .entry(EntryType::Directory, "app/", "", b"")
        .file("app/web", b"x")
        .entry(EntryType::Symlink, "run", "./app/../app/web", b"")
        .entry(EntryType::Symlink, "app/self", "..", b"")
        .entry(EntryType::Link, "app/web2", "app/web", b"")
        .gz();
    check(&bytes).expect("symlinks inside the root");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("pkg");
    unpack(&bytes[..], &dest, &Limits::default()).expect("unpack");
    assert_eq!(fs::read(dest.join("run")).expect("read"), b"x");
    assert_eq!(fs::read(dest.join("app/self/run")).expect("read"), b"x");
}

#[test]
fn limits_stop_bombs() {
    // One entry over the limit is refused from its header; many empty ones
    // by the count of decompressed bytes (their headers).
    let big = vec![0u8; 4 << 20];
    let mut many = ok_base();
    for i in 0..3000 {
        many = many.file(&format!("empty{i}"), b"");
    }
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        ..Limits::default()
    };
    for (what, bytes) in [
        ("one big entry", ok_base().file("zeros", &big).gz()),
        ("many entries", many.gz()),
    ] {
        assert!(bytes.len() < 100 << 10, "{what}: compresses well");
        let err = inspect(&bytes[..], &limits).expect_err(what);
        assert!(err.to_string().contains("unpacks to more than"), "{err}");
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = unpack(&bytes[..], &tmp.path().join("p"), &limits).expect_err(what);
        assert!(err.to_string().contains("unpacks to more than"), "{err}");
        assert!(listing(tmp.path()).is_empty(), "{what}: left files behind");
    }
    let limits = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    let err = inspect(&ok_base().gz()[..], &limits).expect_err("entries");
    assert!(err.to_string().contains("more than 2 entries"), "{err}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = unpack(&ok_base().gz()[..], &tmp.path().join("p"), &limits).expect_err("entries");
    assert!(err.to_string().contains("more than 2 entries"), "{err}");
}

#[test]
fn identity_must_match() {
    let m = check(&ok_base().gz()).expect("good").manifest;
    let v = |s| semver::Version::parse(s).expect("v");
    check_identity(&m, "web", &v("1.0.0")).expect("same");
    assert!(check_identity(&m, "api", &v("1.0.0")).is_err());
    assert!(check_identity(&m, "web", &v("1.0.1")).is_err());
}

// -------------------------------------------------------------------- pack

#[test]
fn pack_dir_is_deterministic_accepted_and_unpacks_to_the_same_tree() {
    use std::os::unix::fs::PermissionsExt;
    let make = |dir: &Path| {
        fs::create_dir_all(dir.join("bin")).expect("mkdir");
        fs::create_dir_all(dir.join("empty")).expect("mkdir");
        fs::write(dir.join("manifest.toml"), MANIFEST_TEXT).expect("write");
        fs::write(dir.join("bin/web"), "#!/bin/sh\necho hi\n").expect("write");
        fs::set_permissions(dir.join("bin/web"), fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::write(dir.join("a.txt"), "a").expect("write");
        std::os::unix::fs::symlink("bin/web", dir.join("run")).expect("symlink");
    };
    let one = tempfile::tempdir().expect("tmp");
    let two = tempfile::tempdir().expect("tmp");
    make(one.path());
    // Different creation order and mtimes, same content.
    fs::write(two.path().join("a.txt"), "a").expect("write");
    make(two.path());
    fs::File::options()
        .write(true)
        .open(two.path().join("a.txt"))
        .and_then(|f| f.set_modified(std::time::SystemTime::UNIX_EPOCH))
        .expect("touch");
    let a = pack_dir(one.path()).expect("pack");
    let b = pack_dir(two.path()).expect("pack");
    assert_eq!(depmgr::sha256_hex(&a), depmgr::sha256_hex(&b));
    let got = check(&a).expect("packed archives pass inspection");
    assert_eq!(got.entries, 6);

    // Entries in sorted order, with normalised metadata.
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&a[..]));
    let mut seen = Vec::new();
    for e in archive.entries().expect("entries") {
        let e = e.expect("entry");
        let h = e.header();
        assert_eq!(h.mtime().expect("mtime"), FIXED_MTIME);
        assert_eq!(h.uid().expect("uid"), 0);
        seen.push((
            e.path().expect("path").display().to_string(),
            h.mode().expect("mode"),
        ));
    }
    assert_eq!(
        seen,
        [
            ("a.txt".to_string(), 0o644),
            ("bin/".to_string(), 0o755),
            ("bin/web".to_string(), 0o755),
            ("empty/".to_string(), 0o755),
            ("manifest.toml".to_string(), 0o644),
            ("run".to_string(), 0o777),
        ]
    );

    // Unpacked, it is the directory it came from.
    let out = tempfile::tempdir().expect("tmp");
    let dest = out.path().join("web");
    unpack(&a[..], &dest, &Limits::default()).expect("unpack");
    assert_eq!(listing(&dest), listing(one.path()));
    assert_eq!(
        fs::read_link(dest.join("run")).expect("link"),
        Path::new("bin/web")
    );

    fs::remove_file(one.path().join("manifest.toml")).expect("rm");
    assert!(pack_dir(one.path()).is_err());
}
