//! The block store: append-only segment files with per-record checksums and an index.
//!
//! ```text
//! <ledger>/blocks/<first slot:012>.seg   records, appended in the order blocks arrive
//! <ledger>/blocks/<first slot:012>.idx   the sealed segment's index (written at sealing)
//!
//! record = len u32 LE | slot u64 LE | sum [u8; 8] | payload (len bytes: the wire-encoded block)
//!          sum = sha256("huione-block-record" | len | slot | payload)[..8]
//! index  = "HIDX" | version u8 | count u32 | (slot u64, offset u64) * count | sum [u8; 8]
//! ```
//!
//! One segment is open for appending; it is sealed (synced, its index written atomically)
//! once it reaches the size bound, and a new one is started. Pruning deletes whole sealed
//! segments whose newest block is below the retention bound, so disk use is bounded by the
//! retention plus one segment. On open, sealed segments are known from their index files
//! (a missing or damaged index is rebuilt by scanning its segment); only the open segment
//! is scanned. A torn last record (a crash during an append) is cut off; a record whose
//! checksum fails ends what is read of its segment. Both are reported with the file's name;
//! the blocks lost are repaired from peers like any missing block, and every block read is
//! verified again by the core (leader signature, hash chain) before it is replayed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use huione_core::{Block, Slot};
use huione_net::Message;
use sha2::{Digest, Sha256};

const RECORD_HEADER: usize = 4 + 8 + 8;
const INDEX_MAGIC: &[u8; 4] = b"HIDX";
const INDEX_VERSION: u8 = 1;
/// A record longer than this is damage, not a block (the wire format bounds a block
/// well below it).
const MAX_RECORD: usize = 1 << 20;

#[derive(Clone, Debug)]
struct Segment {
    path: PathBuf,
    /// Slot → offset of the record, for every block readable from this segment, while it
    /// is open (a sealed segment's offsets are in its index file).
    entries: BTreeMap<Slot, u64>,
    /// A sealed segment's slots, ascending: 8 bytes a block in memory.
    slots: Vec<Slot>,
    bytes: u64,
}

impl Segment {
    fn min(&self) -> Option<Slot> {
        let e = self.entries.keys().next().copied();
        e.or(self.slots.first().copied())
    }
    fn max(&self) -> Option<Slot> {
        let e = self.entries.keys().next_back().copied();
        e.or(self.slots.last().copied())
    }
    fn contains(&self, slot: Slot) -> bool {
        self.entries.contains_key(&slot) || self.slots.binary_search(&slot).is_ok()
    }
    fn len(&self) -> usize {
        self.entries.len() + self.slots.len()
    }
    /// Keeps only the slots in memory (the offsets are in the index file).
    fn sealed(mut self) -> Segment {
        self.slots = self.entries.keys().copied().collect();
        self.entries = BTreeMap::new();
        self
    }
}

/// What opening the store found wrong (already logged; returned for tests and reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The open segment ended inside a record: cut at `offset`.
    TornTail { file: PathBuf, offset: u64 },
    /// A record failed its checksum or length check: nothing after `offset` is read.
    BadRecord { file: PathBuf, offset: u64 },
    /// A sealed segment's index was missing or damaged and was rebuilt.
    IndexRebuilt { file: PathBuf },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::TornTail { file, offset } => write!(
                f,
                "{}: torn last record at byte {offset} (a crash during a write); cut off, the block will be repaired from peers",
                file.display()
            ),
            Damage::BadRecord { file, offset } => write!(
                f,
                "{}: record at byte {offset} fails its checksum; the records from there on are not used and will be repaired from peers",
                file.display()
            ),
            Damage::IndexRebuilt { file } => write!(
                f,
                "{}: missing or damaged index, rebuilt from the segment",
                file.display()
            ),
        }
    }
}

pub struct BlockStore {
    dir: PathBuf,
    segment_max_bytes: u64,
    /// Sealed segments by first slot (the name), then the open one.
    sealed: BTreeMap<Slot, Segment>,
    open: Option<(Slot, Segment, File)>,
    /// Written since the last sync.
    dirty: bool,
}

impl BlockStore {
    /// Opens (or creates) the store in `dir`. Returns it and the damage found.
    pub fn open(dir: &Path, segment_max_bytes: u64) -> anyhow::Result<(BlockStore, Vec<Damage>)> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut names: Vec<Slot> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        names.sort_unstable();
        let mut damage = Vec::new();
        let mut sealed = BTreeMap::new();
        let last = names.last().copied();
        let mut open = None;
        for first in names {
            let seg_path = dir.join(format!("{first:012}.seg"));
            let idx_path = dir.join(format!("{first:012}.idx"));
            if Some(first) != last || idx_path.exists() {
                let seg = match read_index(&idx_path, &seg_path) {
                    Some(seg) => seg,
                    None => {
                        let (seg, _, d) = scan(&seg_path)?;
                        damage.extend(d);
                        write_index(&idx_path, &seg)?;
                        damage.push(Damage::IndexRebuilt { file: idx_path });
                        seg
                    }
                };
                sealed.insert(first, seg.sealed());
                continue;
            }
            // The open segment: scan it, cut a torn tail, keep appending to it.
            let (seg, good_len, d) = scan(&seg_path)?;
            let bad_record = d.iter().any(|d| matches!(d, Damage::BadRecord { .. }));
            damage.extend(d);
            if bad_record {
                // Keep the damaged bytes for inspection: seal what is good, append elsewhere.
                write_index(&idx_path, &seg)?;
                sealed.insert(first, seg.sealed());
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&seg_path)
                .with_context(|| format!("cannot open {}", seg_path.display()))?;
            if file.metadata()?.len() > good_len {
                file.set_len(good_len)
                    .and_then(|()| file.sync_all())
                    .with_context(|| {
                        format!("cannot cut the torn tail of {}", seg_path.display())
                    })?;
            }
            open = Some((first, seg, file));
        }
        for d in &damage {
            tracing::warn!("block store: {d}");
        }
        Ok((
            BlockStore {
                dir: dir.to_path_buf(),
                segment_max_bytes: segment_max_bytes.max(1),
                sealed,
                open,
                dirty: false,
            },
            damage,
        ))
    }

    pub fn contains(&self, slot: Slot) -> bool {
        self.segments().any(|s| s.contains(slot))
    }

    fn segments(&self) -> impl Iterator<Item = &Segment> + '_ {
        self.sealed
            .values()
            .chain(self.open.as_ref().map(|(_, s, _)| s))
    }

    /// Appends a block (not yet durable: call [`BlockStore::sync`]). A block whose slot is
    /// already stored is skipped (the first block seen for a slot is kept).
    pub fn append(&mut self, block: &Block) -> anyhow::Result<bool> {
        if self.contains(block.slot) {
            return Ok(false);
        }
        let payload = huione_net::encode(&Message::Block(block.clone()))
            .map_err(|e| anyhow::anyhow!("cannot encode block {}: {e:?}", block.slot))?;
        if self.open.is_none() {
            self.start_segment(block.slot)?;
        }
        let (_, seg, file) = self.open.as_mut().expect("started above");
        let record = encode_record(block.slot, &payload);
        let offset = seg.bytes;
        if let Err(e) = file.write_all(&record) {
            // A full disk can take part of the record: cut it off and write the next one
            // where this one began, so the offsets stay right.
            use std::io::{Seek, SeekFrom};
            let _ = file
                .set_len(offset)
                .and_then(|()| file.seek(SeekFrom::Start(offset)));
            return Err(
                anyhow::Error::new(e).context(format!("cannot append to {}", seg.path.display()))
            );
        }
        seg.bytes += record.len() as u64;
        seg.entries.insert(block.slot, offset);
        self.dirty = true;
        if seg.bytes >= self.segment_max_bytes {
            self.seal()?;
        }
        Ok(true)
    }

    /// Makes every appended block durable (one fdatasync).
    pub fn sync(&mut self) -> anyhow::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some((_, seg, file)) = &self.open {
            file.sync_data()
                .with_context(|| format!("cannot sync {}", seg.path.display()))?;
        }
        self.dirty = false;
        Ok(())
    }

    fn start_segment(&mut self, first: Slot) -> anyhow::Result<()> {
        let mut first = first;
        // Names are unique: a slot lower than a sealed segment's name (a late repaired
        // block) still starts a segment with a fresh name.
        while self.sealed.contains_key(&first) {
            first += 1;
        }
        let path = self.dir.join(format!("{first:012}.seg"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        sync_dir(&self.dir)?;
        self.open = Some((
            first,
            Segment {
                path,
                entries: BTreeMap::new(),
                slots: Vec::new(),
                bytes: 0,
            },
            file,
        ));
        Ok(())
    }

    /// Syncs the open segment, writes its index and closes it.
    fn seal(&mut self) -> anyhow::Result<()> {
        let Some((first, seg, file)) = self.open.take() else {
            return Ok(());
        };
        file.sync_data()
            .with_context(|| format!("cannot sync {}", seg.path.display()))?;
        self.dirty = false;
        write_index(&self.dir.join(format!("{first:012}.idx")), &seg)?;
        self.sealed.insert(first, seg.sealed());
        Ok(())
    }

    /// Deletes the sealed segments whose newest block is below `below`. Returns how many.
    pub fn prune_below(&mut self, below: Slot) -> anyhow::Result<usize> {
        let old: Vec<Slot> = self
            .sealed
            .iter()
            .filter(|(_, s)| s.max().is_none_or(|m| m < below))
            .map(|(k, _)| *k)
            .collect();
        for k in &old {
            let seg = self.sealed.remove(k).expect("listed above");
            let idx = seg.path.with_extension("idx");
            for p in [&idx, &seg.path] {
                match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot delete {}", p.display()))
                    }
                }
            }
        }
        if !old.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(old.len())
    }

    /// Every stored block with a slot at or above `from`, by slot (each record's checksum
    /// is checked again; a record that fails is reported and skipped).
    pub fn read_from(&self, from: Slot) -> anyhow::Result<Vec<Block>> {
        let mut out = BTreeMap::new();
        for seg in self.segments() {
            if seg.max().is_none_or(|m| m < from) {
                continue;
            }
            let bytes = std::fs::read(&seg.path)
                .with_context(|| format!("cannot read {}", seg.path.display()))?;
            // A sealed segment's offsets come from its index (or a scan, if it is gone).
            let entries = if seg.entries.is_empty() && !seg.slots.is_empty() {
                let idx = seg.path.with_extension("idx");
                match read_index(&idx, &seg.path) {
                    Some(s) => s.entries,
                    None => scan(&seg.path)?.0.entries,
                }
            } else {
                seg.entries.clone()
            };
            for (&slot, &offset) in entries.range(from..) {
                match decode_at(&bytes, offset) {
                    Some((s, block)) if s == slot => {
                        out.entry(slot).or_insert(block);
                    }
                    _ => tracing::warn!(file = %seg.path.display(), offset,
                        "block store: the record of slot {slot} does not verify; it will be repaired from peers"),
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// The lowest and highest stored slots.
    pub fn slot_range(&self) -> Option<(Slot, Slot)> {
        let min = self.segments().filter_map(|s| s.min()).min()?;
        let max = self.segments().filter_map(|s| s.max()).max()?;
        Some((min, max))
    }

    /// How many blocks are stored.
    pub fn len(&self) -> usize {
        self.segments().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments().map(|s| s.bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.sealed.len() + usize::from(self.open.is_some())
    }
}

fn record_sum(slot: Slot, payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"huione-block-record");
    h.update((payload.len() as u32).to_le_bytes());
    h.update(slot.to_le_bytes());
    h.update(payload);
    h.finalize()[..8].try_into().expect("8 bytes")
}

fn encode_record(slot: Slot, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(RECORD_HEADER + payload.len());
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    r.extend_from_slice(&slot.to_le_bytes());
    r.extend_from_slice(&record_sum(slot, payload));
    r.extend_from_slice(payload);
    r
}

/// Result of checking the record at `offset`.
enum Record<'a> {
    Good {
        slot: Slot,
        payload: &'a [u8],
    },
    /// The file ends inside it.
    Torn,
    /// Length or checksum wrong.
    Bad,
}

fn record_at(bytes: &[u8], offset: u64) -> Record<'_> {
    let Ok(offset) = usize::try_from(offset) else {
        return Record::Bad;
    };
    let Some(header) = bytes.get(offset..offset + RECORD_HEADER) else {
        return Record::Torn;
    };
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4")) as usize;
    let slot = u64::from_le_bytes(header[4..12].try_into().expect("8"));
    if len == 0 || len > MAX_RECORD {
        return Record::Bad;
    }
    let start = offset + RECORD_HEADER;
    let Some(payload) = bytes.get(start..start + len) else {
        return Record::Torn;
    };
    if header[12..20] != record_sum(slot, payload) {
        return Record::Bad;
    }
    Record::Good { slot, payload }
}

fn decode_at(bytes: &[u8], offset: u64) -> Option<(Slot, Block)> {
    match record_at(bytes, offset) {
        Record::Good { slot, payload } => match huione_net::decode(payload) {
            Ok(Message::Block(b)) if b.slot == slot => Some((slot, b)),
            _ => None,
        },
        _ => None,
    }
}

/// Reads a whole segment: its readable records, the length of its good prefix, damage.
fn scan(path: &Path) -> anyhow::Result<(Segment, u64, Vec<Damage>)> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut entries = BTreeMap::new();
    let mut offset = 0u64;
    let mut damage = Vec::new();
    while (offset as usize) < bytes.len() {
        match record_at(&bytes, offset) {
            Record::Good { slot, payload } => {
                entries.entry(slot).or_insert(offset);
                offset += (RECORD_HEADER + payload.len()) as u64;
            }
            Record::Torn => {
                damage.push(Damage::TornTail {
                    file: path.to_path_buf(),
                    offset,
                });
                break;
            }
            Record::Bad => {
                damage.push(Damage::BadRecord {
                    file: path.to_path_buf(),
                    offset,
                });
                break;
            }
        }
    }
    Ok((
        Segment {
            path: path.to_path_buf(),
            entries,
            slots: Vec::new(),
            bytes: offset,
        },
        offset,
        damage,
    ))
}

fn index_sum(body: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"huione-block-index");
    h.update(body);
    h.finalize()[..8].try_into().expect("8 bytes")
}

fn write_index(path: &Path, seg: &Segment) -> anyhow::Result<()> {
    let mut body = Vec::with_capacity(9 + seg.entries.len() * 16 + 8);
    body.extend_from_slice(INDEX_MAGIC);
    body.push(INDEX_VERSION);
    body.extend_from_slice(&(seg.entries.len() as u32).to_le_bytes());
    for (slot, offset) in &seg.entries {
        body.extend_from_slice(&slot.to_le_bytes());
        body.extend_from_slice(&offset.to_le_bytes());
    }
    let sum = index_sum(&body);
    body.extend_from_slice(&sum);
    write_atomically(path, &body)
}

/// The sealed segment described by its index, or None if the index is missing, damaged
/// or does not match the segment's length.
fn read_index(idx: &Path, seg: &Path) -> Option<Segment> {
    let bytes = std::fs::read(idx).ok()?;
    let seg_len = std::fs::metadata(seg).ok()?.len();
    if bytes.len() < 9 + 8 || &bytes[..4] != INDEX_MAGIC || bytes[4] != INDEX_VERSION {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if index_sum(body) != sum {
        return None;
    }
    let count = u32::from_le_bytes(body[5..9].try_into().ok()?) as usize;
    if body.len() != 9 + count * 16 {
        return None;
    }
    let mut entries = BTreeMap::new();
    for e in body[9..].chunks_exact(16) {
        let slot = u64::from_le_bytes(e[..8].try_into().ok()?);
        let offset = u64::from_le_bytes(e[8..].try_into().ok()?);
        if offset >= seg_len {
            return None;
        }
        entries.insert(slot, offset);
    }
    Some(Segment {
        path: seg.to_path_buf(),
        entries,
        slots: Vec::new(),
        bytes: seg_len,
    })
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one
/// (`huione_os::fs::write_atomic`: temp file, fsync, rename, fsync of the directory).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    huione_os::fs::write_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    Ok(huione_os::fs::sync_dir(dir)?)
}
