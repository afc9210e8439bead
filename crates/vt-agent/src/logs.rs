//! Per-instance log files: `<logs dir>/<instance>.log`, one line per line of
//! output: `<RFC3339 time> <stdout|stderr> <text>`. When the file passes
//! `max_bytes` it becomes `<instance>.log.1` (replacing the previous one) and a new
//! file starts: at most two files per instance.
//!
//! [`LogWriter`] writes them (the agent's supervisors); [`read`] serves them
//! (the API's `GET /v1/instances/{id}/logs`, through the server assembly).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::Stream as FutStream;

use vt_runtime::Stream;

pub struct LogWriter {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    /// A line not yet ended by a newline (written when the next chunk ends it, or at close).
    partial: Vec<u8>,
    partial_stream: Option<Stream>,
    /// When the line in `partial` was printed (its first chunk's time).
    partial_at: Option<SystemTime>,
}

pub fn log_path(dir: &Path, instance: &str) -> PathBuf {
    dir.join(format!("{instance}.log"))
}

impl LogWriter {
    pub fn open(dir: &Path, instance: &str, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = log_path(dir, instance);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path,
            file,
            size,
            max_bytes: max_bytes.max(1024),
            partial: Vec::new(),
            partial_stream: None,
            partial_at: None,
        })
    }

    /// Write one chunk of output printed now (see [`Self::write_at`]).
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        self.write_at(stream, data, SystemTime::now())
    }

    /// Write one chunk of output printed at `at`: each complete line becomes a log line
    /// stamped with the time its first chunk was printed; an unterminated tail waits for the
    /// rest (flushed by the next chunk of another stream or [`Self::close`]).
    pub fn write_at(&mut self, stream: Stream, data: &[u8], at: SystemTime) -> std::io::Result<()> {
        if self.partial_stream.is_some_and(|s| s != stream) {
            self.flush_partial()?;
        }
        self.partial_stream = Some(stream);
        if self.partial.is_empty() {
            self.partial_at = Some(at);
        }
        self.partial.extend_from_slice(data);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let started = self.partial_at.replace(at).unwrap_or(at);
            self.line(stream, &line[..line.len() - 1], started)?;
        }
        // A single line longer than 32 KiB is cut rather than kept in memory.
        if self.partial.len() > 32 * 1024 {
            self.flush_partial()?;
        }
        Ok(())
    }

    fn flush_partial(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.partial_stream {
            if !self.partial.is_empty() {
                let line = std::mem::take(&mut self.partial);
                let at = self.partial_at.take().unwrap_or_else(SystemTime::now);
                self.line(s, &line, at)?;
            }
        }
        Ok(())
    }

    /// A line about the instance from the agent itself (stream `agent`).
    pub fn note(&mut self, text: &str) -> std::io::Result<()> {
        self.flush_partial()?;
        self.raw("agent", text.as_bytes(), SystemTime::now())
    }

    pub fn close(mut self) -> std::io::Result<()> {
        self.flush_partial()?;
        self.file.sync_data()
    }

    fn line(&mut self, stream: Stream, text: &[u8], at: SystemTime) -> std::io::Result<()> {
        let name = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        self.raw(name, text, at)
    }

    fn raw(&mut self, stream: &str, text: &[u8], at: SystemTime) -> std::io::Result<()> {
        let at = chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut line = format!("{at} {stream} ").into_bytes();
        line.extend(String::from_utf8_lossy(text).replace('\n', " ").into_bytes());
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(&self.path, PathBuf::from(old))?;
        self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// An instance's log as a stream of whole lines: the rotated file then the
/// current one (the last `tail` lines of them, or all), then, with `follow`,
/// lines as they are written until `ended` says the instance has ended. The
/// flag is read before the file, so the last lines are never lost. A rotation
/// while following is noticed (another inode, or a shorter file) and the new
/// file is read from its start.
pub fn read<F, Fut>(
    dir: &Path,
    instance: &str,
    tail: Option<usize>,
    follow: bool,
    ended: F,
) -> impl FutStream<Item = std::io::Result<Bytes>> + Send + 'static
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    enum Step {
        Backlog,
        Follow { pos: u64, ino: u64 },
        Done,
    }
    let path = log_path(dir, instance);
    futures_util::stream::unfold((path, Step::Backlog, ended), move |(path, step, ended)| async move {
        match step {
            Step::Done => None,
            Step::Backlog => {
                let (text, pos, ino) = read_backlog(&path, tail).await;
                let next = if follow { Step::Follow { pos, ino } } else { Step::Done };
                Some((Ok(Bytes::from(text)), (path, next, ended)))
            }
            Step::Follow { mut pos, mut ino } => loop {
                let is_ended = ended().await;
                let (chunk, new_pos, new_ino) = read_new(&path, pos, ino).await;
                (pos, ino) = (new_pos, new_ino);
                if !chunk.is_empty() {
                    return Some((Ok(Bytes::from(chunk)), (path, Step::Follow { pos, ino }, ended)));
                }
                if is_ended {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            },
        }
    })
}

fn inode(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.ino()
}

/// The rotated file then the current one, complete lines only, the last `tail` of them.
/// Returns the text, the position reached in the current file and its inode.
async fn read_backlog(path: &Path, tail: Option<usize>) -> (Vec<u8>, u64, u64) {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    let old = tokio::fs::read(PathBuf::from(rotated)).await.unwrap_or_default();
    let (cur, pos, ino) = read_new(path, 0, 0).await;
    let mut all = old;
    if !all.is_empty() && !all.ends_with(b"\n") {
        all.push(b'\n');
    }
    all.extend_from_slice(&cur);
    if let Some(n) = tail {
        let lines: Vec<&[u8]> = all.split_inclusive(|&b| b == b'\n').collect();
        let skip = lines.len().saturating_sub(n);
        all = lines[skip..].concat();
    }
    (all, pos, ino)
}

/// Complete lines written to `path` past `pos`; starts over when the file was rotated
/// (another inode, or shorter than `pos`).
async fn read_new(path: &Path, mut pos: u64, ino: u64) -> (Vec<u8>, u64, u64) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return (Vec::new(), pos, ino);
    };
    let Ok(meta) = f.metadata().await else {
        return (Vec::new(), pos, ino);
    };
    let new_ino = inode(&meta);
    if (ino != 0 && new_ino != ino) || meta.len() < pos {
        pos = 0;
    }
    if f.seek(std::io::SeekFrom::Start(pos)).await.is_err() {
        return (Vec::new(), pos, new_ino);
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).await.is_err() {
        return (Vec::new(), pos, new_ino);
    }
    match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => {
            buf.truncate(i + 1);
            let len = buf.len() as u64;
            (buf, pos + len, new_ino)
        }
        None => (Vec::new(), pos, new_ino),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_streams_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), "inst_a", 2048).unwrap();
        w.write(Stream::Stdout, b"hello ").unwrap();
        w.write(Stream::Stdout, b"world\nsecond\n").unwrap();
        w.write(Stream::Stderr, b"oops").unwrap();
        w.close().unwrap();
        let text = std::fs::read_to_string(log_path(dir.path(), "inst_a")).unwrap();
        let rest: Vec<&str> = text.lines().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(rest, ["stdout hello world", "stdout second", "stderr oops"]);
        let t = text.lines().next().unwrap().split_once(' ').unwrap().0;
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{t}");

        let mut w = LogWriter::open(dir.path(), "inst_b", 2048).unwrap();
        for i in 0..200 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes()).unwrap();
        }
        w.close().unwrap();
        let cur = std::fs::read_to_string(log_path(dir.path(), "inst_b")).unwrap();
        let old = std::fs::read_to_string(dir.path().join("inst_b.log.1")).unwrap();
        assert!(cur.len() <= 2048 && old.len() <= 2048);
        assert!(cur.ends_with("stdout line 199\n"));
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 3, "two files for inst_b, one for inst_a");
    }

    /// Output printed while no agent was attached keeps the time it was printed: a line is
    /// stamped with its first chunk's time.
    #[test]
    fn lines_keep_the_time_they_were_printed() {
        let dir = tempfile::tempdir().unwrap();
        let t = |s: i64| SystemTime::from(chrono::DateTime::from_timestamp(s, 0).unwrap());
        let mut w = LogWriter::open(dir.path(), "inst_t", 1 << 20).unwrap();
        w.write_at(Stream::Stdout, b"one\ntw", t(1_700_000_000)).unwrap();
        w.write_at(Stream::Stdout, b"o\nthree\n", t(1_700_000_005)).unwrap();
        w.close().unwrap();
        let text = std::fs::read_to_string(log_path(dir.path(), "inst_t")).unwrap();
        assert_eq!(
            text,
            "2023-11-14T22:13:20.000000Z stdout one\n\
             2023-11-14T22:13:20.000000Z stdout two\n\
             2023-11-14T22:13:25.000000Z stdout three\n"
        );
    }
}
