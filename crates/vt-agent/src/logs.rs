//! Per-instance log files: `<data-dir>/agent/logs/<instance>.log`, one line per
//! line of output: `<RFC3339 time> <stdout|stderr> <text>`. When the file passes
//! `max_bytes` it becomes `<instance>.log.1` (replacing the previous one) and a new
//! file starts: at most two files per instance.

use std::io::Write;
use std::path::{Path, PathBuf};

use vt_runtime::Stream;

pub struct LogWriter {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    /// A line not yet ended by a newline (written when the next chunk ends it, or at close).
    partial: Vec<u8>,
    partial_stream: Option<Stream>,
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
        Ok(LogWriter { path, file, size, max_bytes: max_bytes.max(1024), partial: Vec::new(), partial_stream: None })
    }

    /// Write one chunk of output: each complete line becomes a log line; an unterminated
    /// tail waits for the rest (flushed by the next chunk of another stream or [`Self::close`]).
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        if self.partial_stream.is_some_and(|s| s != stream) {
            self.flush_partial()?;
        }
        self.partial_stream = Some(stream);
        self.partial.extend_from_slice(data);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            self.line(stream, &line[..line.len() - 1])?;
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
                self.line(s, &line)?;
            }
        }
        Ok(())
    }

    /// A line about the instance from the agent itself (stream `agent`).
    pub fn note(&mut self, text: &str) -> std::io::Result<()> {
        self.flush_partial()?;
        self.raw("agent", text.as_bytes())
    }

    pub fn close(mut self) -> std::io::Result<()> {
        self.flush_partial()?;
        self.file.sync_data()
    }

    fn line(&mut self, stream: Stream, text: &[u8]) -> std::io::Result<()> {
        let name = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        self.raw(name, text)
    }

    fn raw(&mut self, stream: &str, text: &[u8]) -> std::io::Result<()> {
        let mut line = format!("{} {stream} ", crate::state::now()).into_bytes();
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
}
