//! A module's output on disk: `<data-dir>/modules/<module>/output.log`
//! and its rotated files `output.log.1` (the previous one) up to
//! `output.log.<files-1>` (the oldest).
//!
//! ## Writing
//! The module's shim ([`crate::shim`]) reads the module's stdout and
//! stderr (one pipe) and writes what it reads through a
//! [`RotatingWriter`]: no file grows past `--log-max-bytes`; when a write
//! would, the writer cuts at the last whole line that fits, renames
//! `output.log.<k>` to `output.log.<k+1>` (the oldest is replaced) and
//! `output.log` to `output.log.1`, and goes on in a new `output.log`. A line
//! longer than a whole file is cut. So the disk a module's output takes is
//! at most `--log-max-bytes` × `--log-files`, and nothing the module wrote
//! is dropped except what rotates out of the oldest file. The shim is a
//! process of its own, so the output keeps being written while the agent
//! restarts; a new shim appends to the files an earlier one left.
//!
//! ## Reading
//! [`tail`] answers the last lines across the rotated files (oldest
//! first); [`Follower`] then reads what is appended, moving to the next
//! file when `output.log` is rotated (it holds the old file open, so it
//! reads the old file's last bytes first). A follower that falls more than
//! `--log-files` rotations behind skips what rotated out meanwhile.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Default of `--log-max-bytes`: 10 MiB per file.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;
/// Default of `--log-files`: `output.log` and two rotated files.
pub const DEFAULT_FILES: u32 = 3;
/// Smallest `--log-max-bytes` accepted.
pub const MIN_MAX_BYTES: u64 = 1024;
/// Most `--log-files` accepted.
pub const MAX_FILES: u32 = 100;
/// Default number of lines of `GET /v1/modules/{name}/logs`.
pub const DEFAULT_TAIL: usize = 100;
/// Most lines one request may ask for.
pub const MAX_TAIL: usize = 10_000;
/// Most bytes [`tail`] answers (the newest, cut at a line start).
pub const MAX_TAIL_BYTES: usize = 4 << 20;
/// Block size of reads.
const BLOCK: usize = 64 << 10;

/// The bound on one module's output files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Most bytes of one file.
    pub max_bytes: u64,
    /// Files kept, `output.log` included (at least 1).
    pub files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: DEFAULT_MAX_BYTES,
            files: DEFAULT_FILES,
        }
    }
}

impl Rotation {
    /// Most bytes the module's output files take together.
    pub fn bound(&self) -> u64 {
        self.max_bytes.saturating_mul(u64::from(self.files.max(1)))
    }
}

/// The path of file `i` of the log whose newest file is `base`:
/// `base` itself for 0, `base.<i>` otherwise.
pub fn file(base: &Path, i: u32) -> PathBuf {
    if i == 0 {
        base.to_path_buf()
    } else {
        let mut name = base.as_os_str().to_owned();
        name.push(format!(".{i}"));
        PathBuf::from(name)
    }
}

/// Appends to `base`, rotating by size; see the module documentation.
/// Synchronous (the shim is single-threaded).
#[derive(Debug)]
pub struct RotatingWriter {
    base: PathBuf,
    rotation: Rotation,
    file: File,
    size: u64,
}

impl RotatingWriter {
    /// Opens `base` for appending (created when missing), and removes
    /// rotated files beyond `rotation.files` (left by a larger setting).
    pub fn open(base: &Path, rotation: Rotation) -> io::Result<RotatingWriter> {
        let rotation = Rotation {
            max_bytes: rotation.max_bytes.max(1),
            files: rotation.files.max(1),
        };
        if let Some(dir) = base.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut extra = rotation.files;
        while extra < MAX_FILES * 2 && fs::remove_file(file(base, extra)).is_ok() {
            extra += 1;
        }
        let file = open_append(base)?;
        let size = file.metadata()?.len();
        Ok(RotatingWriter {
            base: base.to_path_buf(),
            rotation,
            file,
            size,
        })
    }

    /// Bytes in the current file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes all of `buf`, rotating first whenever it would not fit.
    pub fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let room = self.rotation.max_bytes.saturating_sub(self.size);
            if buf.len() as u64 <= room {
                self.file.write_all(buf)?;
                self.size += buf.len() as u64;
                return Ok(());
            }
            let room = room as usize; // < buf.len()
            // The whole lines that fit; in an empty file, as much as fits
            // (a line longer than a file is cut).
            let cut = match buf[..room].iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if self.size == 0 => room,
                None => 0,
            };
            if cut > 0 {
                self.file.write_all(&buf[..cut])?;
                self.size += cut as u64;
                buf = &buf[cut..];
            }
            self.rotate()?;
        }
        Ok(())
    }

    /// `output.log.<k>` → `output.log.<k+1>` (the oldest replaced), then
    /// `output.log` → `output.log.1`, and a new `output.log`.
    fn rotate(&mut self) -> io::Result<()> {
        let files = self.rotation.files;
        if files == 1 {
            match fs::remove_file(&self.base) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        } else {
            for i in (1..files).rev() {
                match fs::rename(file(&self.base, i - 1), file(&self.base, i)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.file = open_append(&self.base)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Where a reader is in the newest file it has read.
#[derive(Debug)]
struct Cursor {
    file: File,
    ino: u64,
    pos: u64,
}

impl Cursor {
    fn open(path: &Path) -> io::Result<Option<Cursor>> {
        match File::open(path) {
            Ok(file) => {
                let ino = file.metadata()?.ino();
                Ok(Some(Cursor { file, ino, pos: 0 }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Appends to `out` what the file holds past `pos`, up to `out` being
    /// `max` bytes long.
    fn read_new(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len < self.pos {
            self.pos = 0; // truncated
        }
        let mut buf = vec![0u8; BLOCK];
        while self.pos < len && out.len() < max {
            let want = ((len - self.pos) as usize).min(max - out.len()).min(BLOCK);
            let n = self.file.read_at(&mut buf[..want], self.pos)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            self.pos += n as u64;
        }
        Ok(())
    }
}

/// The last lines of a log, and where a [`Follower`] goes on from.
#[derive(Debug)]
pub struct Tail {
    /// The lines, oldest first (the last one may be unfinished).
    pub text: Vec<u8>,
    /// Reads what is appended after `text`.
    pub follower: Follower,
}

/// The last `lines` lines of the log whose newest file is `base`, over
/// its `files` files, at most [`MAX_TAIL_BYTES`] bytes.
pub fn tail(base: &Path, files: u32, lines: usize) -> io::Result<Tail> {
    let files = files.max(1);
    // The newest file first: what is appended to it later is the
    // follower's.
    let newest = Cursor::open(base)?;
    let mut follower = Follower {
        base: base.to_path_buf(),
        files,
        cur: None,
    };
    // Newest first: blocks of the files, read backwards.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    let mut bytes = 0usize;
    let enough = |newlines: usize, bytes: usize| newlines > lines || bytes >= MAX_TAIL_BYTES;
    let mut opened = newest;
    for i in 0..files {
        if lines == 0 || enough(newlines, bytes) {
            break;
        }
        let cur = if i == 0 {
            opened.take()
        } else {
            Cursor::open(&file(base, i))?
        };
        let Some(mut cur) = cur else {
            if i == 0 {
                continue;
            }
            break;
        };
        let len = cur.file.metadata()?.len();
        let mut end = len;
        while end > 0 && !enough(newlines, bytes) {
            let start = end.saturating_sub(BLOCK as u64);
            let mut block = vec![0u8; (end - start) as usize];
            cur.file.read_exact_at(&mut block, start)?;
            newlines += block.iter().filter(|&&b| b == b'\n').count();
            bytes += block.len();
            blocks.push(block);
            end = start;
        }
        if i == 0 {
            cur.pos = len;
            follower.cur = Some(cur);
        }
    }
    if let Some(cur) = opened {
        // lines == 0: nothing read, follow from the end.
        let len = cur.file.metadata()?.len();
        follower.cur = Some(Cursor { pos: len, ..cur });
    }
    let mut text: Vec<u8> = blocks.into_iter().rev().flatten().collect();
    // Keep the last `lines` lines (an unfinished last line counts).
    let body_end = if text.last() == Some(&b'\n') {
        text.len() - 1
    } else {
        text.len()
    };
    let mut start = 0;
    let mut seen = 0;
    for (i, &b) in text[..body_end].iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == lines {
                start = i + 1;
                break;
            }
        }
    }
    if lines == 0 {
        start = text.len();
    }
    // Over the byte bound: from the first line start within it.
    if text.len() - start > MAX_TAIL_BYTES {
        let from = text.len() - MAX_TAIL_BYTES;
        start = text[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(from, |i| from + i + 1);
    }
    text.drain(..start);
    Ok(Tail { text, follower })
}

/// Reads what is appended to a log, across rotations; see the module
/// documentation.
#[derive(Debug)]
pub struct Follower {
    base: PathBuf,
    files: u32,
    /// `None`: no `output.log` yet.
    cur: Option<Cursor>,
}

impl Follower {
    /// What was appended since the last call, at most `max` bytes (empty:
    /// nothing new).
    pub fn read_new(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // Each turn reads one file to its end, then moves to the next
        // newer one; `files` + 2 turns reach `output.log` from anywhere.
        for _ in 0..self.files + 2 {
            if self.cur.is_none() {
                self.cur = Cursor::open(&self.base)?;
                if self.cur.is_none() {
                    return Ok(out);
                }
            }
            let Some(cur) = self.cur.as_mut() else {
                continue;
            };
            cur.read_new(&mut out, max)?;
            if out.len() >= max {
                return Ok(out);
            }
            match fs::metadata(&self.base) {
                Ok(m) if m.ino() == cur.ino => return Ok(out),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            // Rotated: the old file's last bytes (written before the
            // rename), then the file that came after it.
            cur.read_new(&mut out, max)?;
            if out.len() >= max {
                return Ok(out);
            }
            let ino = cur.ino;
            let mut found = None;
            let mut oldest = None;
            for i in 1..self.files {
                match fs::metadata(file(&self.base, i)) {
                    Ok(m) => {
                        oldest = Some(i);
                        if m.ino() == ino {
                            found = Some(i);
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            // Ours is now file i: the next is i - 1. Rotated out (or a
            // single file): the oldest there is, all newer than ours.
            let next = match found {
                Some(i) => i - 1,
                None => oldest.unwrap_or(0),
            };
            self.cur = Cursor::open(&file(&self.base, next))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(base: &Path, files: u32) -> u64 {
        (0..files + 2)
            .filter_map(|i| fs::metadata(file(base, i)).ok())
            .map(|m| m.len())
            .sum()
    }

    #[test]
    fn a_chatty_writer_stays_under_the_bound() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().join("m/output.log");
        let rot = Rotation {
            max_bytes: 4096,
            files: 3,
        };
        let mut w = RotatingWriter::open(&base, rot).expect("open");
        let mut written = 0u64;
        for i in 0..20_000u32 {
            let line = format!("line {i} {}\n", "x".repeat((i % 97) as usize));
            w.write(line.as_bytes()).expect("write");
            written += line.len() as u64;
            // Every file under its bound at every moment.
            assert!(w.size() <= rot.max_bytes);
        }
        assert!(written > 50 * rot.bound());
        assert!(total(&base, rot.files) <= rot.bound());
        for i in 0..rot.files {
            let len = fs::metadata(file(&base, i)).expect("file").len();
            assert!(len <= rot.max_bytes, "file {i}: {len}");
        }
        assert!(!file(&base, rot.files).exists());
        // Rotation at line boundaries: every file holds whole lines.
        for i in 0..rot.files {
            let text = fs::read_to_string(file(&base, i)).expect("read");
            assert!(text.ends_with('\n'), "file {i}");
            assert!(text.starts_with("line "), "file {i}");
        }
        // A line longer than a file is cut, and still bounded.
        w.write(&vec![b'y'; 10_000]).expect("long line");
        w.write(b"\n").expect("newline");
        assert!(total(&base, rot.files) <= rot.bound());
        // Reopening with fewer files removes the extra ones.
        drop(w);
        let w = RotatingWriter::open(
            &base,
            Rotation {
                max_bytes: 4096,
                files: 2,
            },
        )
        .expect("reopen");
        assert!(w.size() <= 4096);
        assert!(!file(&base, 2).exists());
    }

    #[test]
    fn nothing_is_lost_before_the_oldest_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().join("output.log");
        let rot = Rotation {
            max_bytes: 1000,
            files: 4,
        };
        let mut w = RotatingWriter::open(&base, rot).expect("open");
        for i in 0..1000 {
            w.write(format!("{i:05}\n").as_bytes()).expect("write");
        }
        let all: String = (0..rot.files)
            .rev()
            .map(|i| fs::read_to_string(file(&base, i)).unwrap_or_default())
            .collect();
        let nums: Vec<u32> = all.lines().map(|l| l.parse().expect("num")).collect();
        assert_eq!(nums.last(), Some(&999));
        // Consecutive: no line lost across rotations.
        for w in nums.windows(2) {
            assert_eq!(w[1], w[0] + 1);
        }
    }

    #[test]
    fn tail_reads_across_rotated_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().join("output.log");
        let rot = Rotation {
            max_bytes: 100,
            files: 5,
        };
        let mut w = RotatingWriter::open(&base, rot).expect("open");
        for i in 0..60 {
            w.write(format!("l{i:03}\n").as_bytes()).expect("write");
        }
        // 5 bytes a line, 20 lines a file: the last 60 lines span 3+ files.
        assert!(file(&base, 2).exists());
        let t = tail(&base, rot.files, 45).expect("tail");
        let text = String::from_utf8(t.text).expect("utf8");
        let want: String = (15..60).map(|i| format!("l{i:03}\n")).collect();
        assert_eq!(text, want);
        let t = tail(&base, rot.files, 3).expect("tail");
        assert_eq!(t.text, b"l057\nl058\nl059\n");
        // More lines than there are: all of them.
        let t = tail(&base, rot.files, 10_000).expect("tail");
        let text = String::from_utf8(t.text).expect("utf8");
        assert!(text.starts_with("l0") && text.ends_with("l059\n"));
        assert_eq!(text.lines().count(), text.len() / 5);
        assert!(tail(&base, rot.files, 0).expect("tail").text.is_empty());
        // An unfinished last line counts as a line.
        w.write(b"part").expect("write");
        let t = tail(&base, rot.files, 2).expect("tail");
        assert_eq!(t.text, b"l059\npart");
        // No log at all: nothing.
        let t = tail(&dir.path().join("none.log"), 3, 10).expect("tail");
        assert!(t.text.is_empty());
    }

    #[test]
    fn a_follower_reads_every_line_across_rotations() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().join("output.log");
        let rot = Rotation {
            max_bytes: 64,
            files: 3,
        };
        // Follows a log that does not exist yet.
        let mut f = tail(&base, rot.files, 10).expect("tail").follower;
        assert!(f.read_new(1 << 20).expect("read").is_empty());
        let mut w = RotatingWriter::open(&base, rot).expect("open");
        let mut seen = Vec::new();
        let mut want = Vec::new();
        for i in 0..500 {
            let line = format!("n{i:04}\n");
            w.write(line.as_bytes()).expect("write");
            want.extend_from_slice(line.as_bytes());
            // Read every few lines: at most one rotation in between.
            if i % 7 == 0 {
                seen.extend(f.read_new(1 << 20).expect("read"));
            }
        }
        seen.extend(f.read_new(1 << 20).expect("read"));
        assert_eq!(
            String::from_utf8_lossy(&seen),
            String::from_utf8_lossy(&want)
        );
        // Small reads come in pieces and lose nothing.
        for i in 0..30 {
            w.write(format!("m{i:04}\n").as_bytes()).expect("write");
        }
        let mut got = Vec::new();
        loop {
            let chunk = f.read_new(7).expect("read");
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 7);
            got.extend(chunk);
        }
        let want: String = (0..30).map(|i| format!("m{i:04}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&got), want);
    }

    #[test]
    fn tail_then_follow_has_no_gap() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().join("output.log");
        let rot = Rotation {
            max_bytes: 1 << 20,
            files: 2,
        };
        let mut w = RotatingWriter::open(&base, rot).expect("open");
        w.write(b"a\nb\n").expect("write");
        let mut t = tail(&base, rot.files, 1).expect("tail");
        assert_eq!(t.text, b"b\n");
        w.write(b"c\n").expect("write");
        assert_eq!(t.follower.read_new(1024).expect("read"), b"c\n");
    }
}
