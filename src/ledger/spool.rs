//! The spool: an append-only local file through which every ledger row
//! passes on its way to the database (a write-ahead log).
//!
//! A record is `[magic "TGS1"][length: u32 LE][crc32: u32 LE][JSON array
//! of rows]`, written with one `write` and made durable with one `fsync`
//! per batch. A write that fails is cut off: the file is truncated back to
//! its length before it, so a later record never follows a torn one. On
//! read, a record that is short or whose checksum fails (a crash mid-write,
//! a bad sector) is skipped: reading resumes at the next magic, so every
//! good record before and after it is kept. Records written before the
//! magic existed (`[length][crc][rows]`) are still read.
//!
//! New rows append to `spool.log`; replay first renames it to
//! `replay-<n>.log`, so appends and replay never touch the same file, and
//! deletes a replay file only after every row in it is stored. Rows are
//! inserted idempotently, so a replay cut short is simply repeated.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::Entry;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
const CURRENT: &str = "spool.log";
/// Rejected rows the database could not take even as dead letters.
pub const DEAD_LETTERS: &str = "dead-letters.jsonl";
/// The start of every record.
const MAGIC: &[u8; 4] = b"TGS1";
/// Largest record accepted on read (a guard against a corrupt length).
const MAX_RECORD: usize = 256 * 1024 * 1024;

pub struct Spool {
    dir: PathBuf,
    file: Option<File>,
}

impl Spool {
    pub fn open(dir: &Path) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            file: None,
        })
    }

    /// Appends rows durably.
    pub fn append(&mut self, rows: &[Entry]) -> io::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_vec(rows).map_err(io::Error::other)?;
        let mut record = Vec::with_capacity(payload.len() + 12);
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&CRC.checksum(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(CURRENT))?;
                // The file's directory entry must survive a power loss too.
                sync_dir(&self.dir)?;
                self.file.insert(file)
            }
        };
        let before = file.metadata()?.len();
        let written = file.write_all(&record).and_then(|()| file.sync_data());
        if let Err(error) = written {
            // Cut the torn record off, so that no later record follows it;
            // reopen on the next append.
            let _ = file.set_len(before).and_then(|()| file.sync_data());
            self.file = None;
            return Err(error);
        }
        Ok(())
    }

    /// Empties the current file once every row in it is stored (the writer
    /// knows; nothing else may call this).
    pub fn truncate_current(&mut self) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => return Ok(()),
        };
        file.set_len(0)?;
        file.sync_data()
    }

    /// Appends a rejected row to `dead-letters.jsonl` (when the database
    /// cannot even take it as a dead letter), durably.
    pub fn append_dead_letter(&self, row: &Entry, reason: &str, at: i64) -> io::Result<()> {
        let line = serde_json::json!({"row": row, "reason": reason, "set_aside_at": at});
        let mut text = serde_json::to_vec(&line).map_err(io::Error::other)?;
        text.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(DEAD_LETTERS))?;
        file.write_all(&text)?;
        file.sync_data()
    }

    /// Bytes in the current file.
    pub fn current_bytes(&self) -> u64 {
        fs::metadata(self.dir.join(CURRENT)).map_or(0, |m| m.len())
    }

    /// Spool files waiting for replay, oldest first: earlier replay files,
    /// then the current file (renamed so that appends go to a fresh one).
    pub fn take_for_replay(&mut self) -> io::Result<Vec<PathBuf>> {
        self.file = None;
        let current = self.dir.join(CURRENT);
        if current.exists() && fs::metadata(&current)?.len() > 0 {
            // Names sort in the order files were taken; a name in use is
            // never reused (a rename over it would destroy its rows).
            let now = crate::clock::now_ms().max(0) as u64;
            let (stamp, index) = match self.newest_replay()?.as_deref().and_then(replay_name) {
                // After the newest in order, even if the clock stepped back.
                Some((stamp, index)) if stamp >= now => (stamp, index + 1),
                _ => (now, 0),
            };
            let target = self.dir.join(format!("replay-{stamp:013}-{index:06}.log"));
            if target.exists() {
                return Err(io::Error::other(format!(
                    "{} exists; not renaming over it",
                    target.display()
                )));
            }
            fs::rename(&current, target)?;
            sync_dir(&self.dir)?;
        }
        self.replay_files()
    }

    /// The last replay file in order, if any.
    fn newest_replay(&self) -> io::Result<Option<PathBuf>> {
        Ok(self.replay_files()?.pop())
    }

    fn replay_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("replay-") && n.ends_with(".log"))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Whether anything waits in the spool.
    pub fn is_empty(&self) -> bool {
        let current_empty = fs::metadata(self.dir.join(CURRENT)).map_or(true, |m| m.len() == 0);
        current_empty && self.replay_files().map_or(true, |f| f.is_empty())
    }

    /// Bytes waiting in the spool.
    pub fn size_bytes(&self) -> u64 {
        let mut total = fs::metadata(self.dir.join(CURRENT)).map_or(0, |m| m.len());
        for file in self.replay_files().unwrap_or_default() {
            total += fs::metadata(file).map_or(0, |m| m.len());
        }
        total
    }
}

/// The stamp and index of a replay file's name.
fn replay_name(path: &Path) -> Option<(u64, u64)> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("replay-")?.strip_suffix(".log")?;
    let (stamp, index) = rest.split_once('-')?;
    Some((stamp.parse().ok()?, index.parse().ok()?))
}

/// Makes a directory's entries (a created or renamed file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads the good records of a spool file, in order, skipping bad ones;
/// also returns how many bytes were skipped.
pub fn read_records(path: &Path) -> io::Result<(Vec<Vec<Entry>>, usize)> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let (records, skipped) = parse_records(&bytes);
    if skipped > 0 {
        tracing::warn!(file = %path.display(), skipped_bytes = skipped, "Spool file had torn or corrupt records; the good ones around them are kept.");
    }
    Ok((records, skipped))
}

/// Rows in the spool's files (counted at start).
pub fn count_rows(dir: &Path) -> u64 {
    let Ok(spool) = Spool::open(dir) else {
        return 0;
    };
    let mut files = spool.replay_files().unwrap_or_default();
    files.push(dir.join(CURRENT));
    files
        .iter()
        .filter(|f| f.exists())
        .filter_map(|f| read_records(f).ok())
        .map(|(records, _)| records.iter().map(|r| r.len() as u64).sum::<u64>())
        .sum()
}

/// One record at `at`: its rows and where the next record starts.
fn record_at(bytes: &[u8], at: usize) -> Option<(Vec<Entry>, usize)> {
    let framed = bytes.get(at..at + 4) == Some(MAGIC.as_slice());
    let header = if framed { at + 4 } else { at };
    let word = |i: usize| -> Option<u32> {
        let b = bytes.get(i..i + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let length = word(header)? as usize;
    let checksum = word(header + 4)?;
    let start = header + 8;
    if length > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(start..start.checked_add(length)?)?;
    if CRC.checksum(payload) != checksum {
        return None;
    }
    let rows = serde_json::from_slice::<Vec<Entry>>(payload).ok()?;
    Some((rows, start + length))
}

/// Every good record, in order, and the bytes skipped around bad ones.
fn parse_records(bytes: &[u8]) -> (Vec<Vec<Entry>>, usize) {
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut at = 0;
    while at < bytes.len() {
        if let Some((rows, next)) = record_at(bytes, at) {
            records.push(rows);
            at = next;
            continue;
        }
        // A bad record: resume at the next magic after it.
        let resume = bytes
            .get(at + 1..)
            .and_then(|rest| rest.windows(4).position(|w| w == MAGIC.as_slice()))
            .map_or(bytes.len(), |offset| at + 1 + offset);
        skipped += resume - at;
        at = resume;
    }
    (records, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> Entry {
        let mut entry = Entry::draft(id.to_string().into(), "u", "k", "chat.completions", 0);
        entry.cost_nano = 42;
        entry
    }

    #[test]
    fn records_survive_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-spool-test-{}",
            crate::keys::random_base62(8)
        ));
        let mut spool = Spool::open(&dir).unwrap();
        spool.append(&[row("a"), row("b")]).unwrap();
        spool.append(&[row("c")]).unwrap();
        // A crash mid-write leaves half a record.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.join(CURRENT))
            .unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(file);
        let files = spool.take_for_replay().unwrap();
        assert_eq!(files.len(), 1);
        let (records, _) = read_records(&files[0]).unwrap();
        let ids: Vec<Vec<String>> = records
            .iter()
            .map(|r| r.iter().map(|row| row.request_id.to_string()).collect())
            .collect();
        assert_eq!(
            ids,
            vec![
                vec!["a".to_string(), "b".to_string()],
                vec!["c".to_string()]
            ]
        );
        // New appends go to a fresh file.
        spool.append(&[row("d")]).unwrap();
        assert_eq!(spool.take_for_replay().unwrap().len(), 2);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_bad_record_in_the_middle_loses_only_itself() {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-spool-test-{}",
            crate::keys::random_base62(8)
        ));
        let mut spool = Spool::open(&dir).unwrap();
        spool.append(&[row("a")]).unwrap();
        let path = dir.join(CURRENT);
        let first = fs::metadata(&path).unwrap().len() as usize;
        spool.append(&[row("b")]).unwrap();
        spool.append(&[row("c")]).unwrap();
        // Corrupt the middle record's payload, then tear a fourth mid-write
        // and append a fifth after it (as a crash and restart would).
        let mut bytes = fs::read(&path).unwrap();
        bytes[first + 20] ^= 0xFF;
        bytes.extend_from_slice(b"TGS1\x40\x00\x00\x00garbage");
        fs::write(&path, &bytes).unwrap();
        spool.file = None;
        spool.append(&[row("e")]).unwrap();
        let (records, skipped) = read_records(&path).unwrap();
        assert!(skipped > 0);
        let ids: Vec<String> = records
            .iter()
            .flatten()
            .map(|r| r.request_id.to_string())
            .collect();
        assert_eq!(ids, vec!["a", "c", "e"]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn replay_files_never_collide_even_if_the_clock_steps_back() {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-spool-test-{}",
            crate::keys::random_base62(8)
        ));
        let mut spool = Spool::open(&dir).unwrap();
        // A file taken "later" than now (the clock has since stepped back).
        fs::write(dir.join("replay-9999999999999-000007.log"), b"").unwrap();
        spool.append(&[row("a")]).unwrap();
        let files = spool.take_for_replay().unwrap();
        assert_eq!(files.len(), 2);
        assert!(
            files[1].ends_with("replay-9999999999999-000008.log"),
            "{files:?}"
        );
        spool.append(&[row("b")]).unwrap();
        let files = spool.take_for_replay().unwrap();
        assert!(
            files[2].ends_with("replay-9999999999999-000009.log"),
            "{files:?}"
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn records_without_the_magic_are_still_read() {
        let payload = serde_json::to_vec(&[row("old")]).unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&CRC.checksum(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let (records, skipped) = parse_records(&bytes);
        assert_eq!((records.len(), skipped), (1, 0));
    }

    #[test]
    fn a_corrupt_checksum_skips_the_record() {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-spool-test-{}",
            crate::keys::random_base62(8)
        ));
        let mut spool = Spool::open(&dir).unwrap();
        spool.append(&[row("a")]).unwrap();
        spool.append(&[row("b")]).unwrap();
        let path = dir.join(CURRENT);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xFF;
        fs::write(&path, bytes).unwrap();
        let (records, _) = read_records(&path).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0][0].request_id.as_str(), "a");
        let _ = fs::remove_dir_all(dir);
    }
}
