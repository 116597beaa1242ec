//! TensorBoard event files, written by hand: no TensorFlow, no protobuf compiler.
//!
//! An event file is a sequence of TFRecords. Each record is
//! `u64 length (LE) | u32 masked CRC32C of those 8 bytes | data | u32 masked CRC32C of data`,
//! where the mask is `((crc >> 15) | (crc << 17)) + 0xa282ead8` (TensorFlow's `crc32c::Mask`).
//! Each `data` is a serialised `tensorflow.Event` protobuf. We only need a few fields, so they
//! are encoded directly:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```
//!
//! The first record carries `file_version = "brain.Event:2"`, as TensorBoard expects. The
//! file name must contain `tfevents`; TensorBoard picks up every such file under `--logdir`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The CRC32C (Castagnoli, reflected polynomial 0x82F63B78) lookup table.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC32C of `bytes` (the checksum TFRecord uses; not the IEEE CRC32 of zip and PNG).
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TensorFlow's masked CRC: storing a CRC of data that itself contains CRCs is fragile, so
/// TFRecord rotates and offsets it.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends `value` as a protobuf varint.
fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a length-delimited field (wire type 2).
fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The protobuf bytes of an `Event` with a wall time, a step, and either a file version or
/// scalar summary values.
pub fn encode_event(
    wall_time: f64,
    step: i64,
    file_version: Option<&str>,
    scalars: &[(String, f64)],
) -> Vec<u8> {
    let mut out = Vec::new();
    // wall_time: field 1, wire type 1 (64-bit).
    out.push(1 << 3 | 1);
    out.extend_from_slice(&wall_time.to_le_bytes());
    // step: field 2, varint (int64 as two's complement).
    out.push(2 << 3);
    varint(&mut out, step as u64);
    if let Some(v) = file_version {
        bytes_field(&mut out, 3, v.as_bytes());
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            // simple_value: field 2, wire type 5 (32-bit float).
            v.push(2 << 3 | 5);
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        bytes_field(&mut out, 5, &summary);
    }
    out
}

/// Frames `data` as one TFRecord.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An open event file; each call appends records and flushes, so TensorBoard sees rounds as
/// they finish.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` and a new `events.out.tfevents.<seconds>.cohort` file in it, starting
    /// with the file-version record.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let now = now_seconds();
        let path = dir.join(format!("events.out.tfevents.{}.cohort", now as u64));
        let mut writer = Self {
            file: BufWriter::new(File::create(&path)?),
            path,
        };
        writer.append(&encode_event(now, 0, Some("brain.Event:2"), &[]))?;
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&mut self, event: &[u8]) -> std::io::Result<()> {
        self.file.write_all(&frame_record(event))?;
        self.file.flush()
    }

    /// Appends one event holding `scalars` (tag, value) at `step`. Non-finite values are
    /// written as they are (TensorBoard shows NaN and ∞).
    pub fn write_scalars(&mut self, step: i64, scalars: &[(String, f64)]) -> std::io::Result<()> {
        self.append(&encode_event(now_seconds(), step, None, scalars))
    }
}
