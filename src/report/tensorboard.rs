//! TensorBoard event files: no TensorFlow, no protobuf compiler.
//!
//! An event file is a sequence of TFRecords. Each record is
//! `u64 length (LE) | u32 masked CRC32C of those 8 bytes | data | u32 masked CRC32C of data`,
//! where the mask is `((crc >> 15) | (crc << 17)) + 0xa282ead8` (TensorFlow's `crc32c::Mask`).
//! Each `data` is a serialised `tensorflow.Event` protobuf, encoded by `prost` from the
//! message types below: the fields of TensorFlow's `event.proto` and `summary.proto` that a
//! scalar log needs, with TensorFlow's field numbers (a reader skips the fields we omit, as
//! protobuf readers do). Declaring them with `prost`'s derive needs no `.proto` files and no
//! `protoc` at build time.
//!
//! The first record carries `file_version = "brain.Event:2"`, as TensorBoard expects. The
//! file name must contain `tfevents`; TensorBoard picks up every such file under `--logdir`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

/// `tensorflow.Event`, the fields we write.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The global step (the round).
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event carries.
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// `Event.what`, the two cases we write.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// The first record of a file: `brain.Event:2`.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// Scalar values at the event's step.
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// One entry per tag.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a `simple_value` (TensorBoard's scalar).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// The series' name, e.g. `epsilon/record_max`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The value; TensorBoard stores scalars as 32-bit floats.
    #[prost(float, tag = "2")]
    pub simple_value: f32,
}

/// CRC32C (Castagnoli, the iSCSI polynomial): the checksum TFRecord uses, not the IEEE CRC32
/// of zip and PNG.
const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// CRC32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CASTAGNOLI.checksum(bytes)
}

/// TensorFlow's masked CRC: storing a CRC of data that itself contains CRCs is fragile, so
/// TFRecord rotates and offsets it.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The protobuf bytes of an `Event` with a wall time, a step, and either a file version or
/// scalar summary values.
pub fn encode_event(
    wall_time: f64,
    step: i64,
    file_version: Option<&str>,
    scalars: &[(String, f64)],
) -> Vec<u8> {
    let what = match file_version {
        Some(v) => Some(What::FileVersion(v.to_owned())),
        None if scalars.is_empty() => None,
        None => Some(What::Summary(Summary {
            value: scalars
                .iter()
                .map(|(tag, value)| SummaryValue {
                    tag: tag.clone(),
                    simple_value: *value as f32,
                })
                .collect(),
        })),
    };
    Event {
        wall_time,
        step,
        what,
    }
    .encode_to_vec()
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
