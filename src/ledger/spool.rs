//! The spool: an append-only local file that holds ledger rows while the
//! database cannot take them.
//!
//! A record is `[length: u32 LE][crc32: u32 LE][JSON array of rows]`,
//! written with one `write` and made durable with `fsync` before the rows
//! leave memory. Reading stops at the first record that is short or whose
//! checksum fails (a write torn by a crash); everything before it is good.
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
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&CRC.checksum(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(CURRENT))?,
            ),
        };
        file.write_all(&record)?;
        file.sync_data()
    }

    /// Spool files waiting for replay, oldest first: earlier replay files,
    /// then the current file (renamed so that appends go to a fresh one).
    pub fn take_for_replay(&mut self) -> io::Result<Vec<PathBuf>> {
        self.file = None;
        let current = self.dir.join(CURRENT);
        if current.exists() && fs::metadata(&current)?.len() > 0 {
            let next = self.replay_files()?.len();
            let stamp = crate::clock::now_ms();
            fs::rename(
                &current,
                self.dir.join(format!("replay-{stamp:013}-{next:06}.log")),
            )?;
        }
        self.replay_files()
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

/// Reads the good records of a spool file, in order.
pub fn read_records(path: &Path) -> io::Result<Vec<Vec<Entry>>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let length =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let checksum =
            u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let start = at + 8;
        if length > MAX_RECORD || start + length > bytes.len() {
            break;
        }
        let payload = &bytes[start..start + length];
        if CRC.checksum(payload) != checksum {
            break;
        }
        match serde_json::from_slice::<Vec<Entry>>(payload) {
            Ok(rows) => records.push(rows),
            Err(_) => break,
        }
        at = start + length;
    }
    Ok(records)
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
        let records = read_records(&files[0]).unwrap();
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
    fn a_corrupt_checksum_stops_the_read() {
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
        let records = read_records(&path).unwrap();
        assert_eq!(records.len(), 1);
        let _ = fs::remove_dir_all(dir);
    }
}
