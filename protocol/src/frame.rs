//! The binary vector frame: how model updates travel.
//!
//! Layout (all integers little-endian; see `protocol/README.md` for the byte-by-byte table):
//!
//! ```text
//! offset  size       field
//! 0       4          magic "CVEC"
//! 4       2          version (u16) = 1
//! 6       1          dtype: 1 = f32, 2 = f64, 3 = u32
//! 7       1          flags, reserved: must be 0
//! 8       8          count (u64): number of elements
//! 16      count*w    payload: elements, w = 4 or 8 bytes each
//! 16+P    4          CRC-32 (IEEE) of bytes [0, 16+P)
//! ```
//!
//! The checksum catches truncation and corruption that TLS cannot (a buggy client, a proxy);
//! authenticity comes from TLS, not from the CRC.

use std::fmt;

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"CVEC";
/// The frame version this build writes and reads.
pub const VERSION: u16 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;
/// Bytes after the payload.
pub const TRAILER_LEN: usize = 4;

/// The element type of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dtype {
    /// IEEE-754 binary32: plain (unmasked) updates.
    F32,
    /// IEEE-754 binary64.
    F64,
    /// Unsigned 32-bit integers: quantised values in Z_{2^32}, as secure aggregation sends them.
    U32,
}

impl Dtype {
    /// The tag byte at offset 6.
    pub fn tag(self) -> u8 {
        match self {
            Self::F32 => 1,
            Self::F64 => 2,
            Self::U32 => 3,
        }
    }

    /// Parses the tag byte.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Self::F32),
            2 => Some(Self::F64),
            3 => Some(Self::U32),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            Self::F32 | Self::U32 => 4,
            Self::F64 => 8,
        }
    }

    /// A lower-case name for messages ("f32").
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::U32 => "u32",
        }
    }
}

/// Why bytes are not a valid frame. Each variant says what the sender got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than a header and trailer.
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The first four bytes were not `CVEC`.
    BadMagic,
    /// A frame version this build does not read.
    UnsupportedVersion(u16),
    /// A dtype tag that is not 1, 2 or 3.
    UnknownDtype(u8),
    /// Reserved flag bits were set.
    ReservedFlags(u8),
    /// The declared element count does not match the bytes received.
    LengthMismatch {
        /// Elements declared in the header.
        declared: u64,
        /// Payload bytes actually present.
        payload_bytes: usize,
    },
    /// The CRC-32 trailer does not match the contents.
    Checksum {
        /// The trailer's value.
        expected: u32,
        /// The value computed over the received bytes.
        actual: u32,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => write!(
                f,
                "vector frame too short: {len} bytes, at least {} needed",
                HEADER_LEN + TRAILER_LEN
            ),
            Self::BadMagic => write!(
                f,
                "not a vector frame: it must start with the bytes \"CVEC\""
            ),
            Self::UnsupportedVersion(v) => {
                write!(
                    f,
                    "vector frame version {v} is not supported (this server reads version {VERSION})"
                )
            }
            Self::UnknownDtype(t) => write!(f, "unknown dtype tag {t} (1 = f32, 2 = f64, 3 = u32)"),
            Self::ReservedFlags(b) => write!(f, "reserved flags byte must be 0, got {b}"),
            Self::LengthMismatch {
                declared,
                payload_bytes,
            } => write!(
                f,
                "header declares {declared} elements but the payload has {payload_bytes} bytes"
            ),
            Self::Checksum { expected, actual } => write!(
                f,
                "checksum mismatch: trailer says {expected:#010x}, contents give {actual:#010x} (truncated or corrupted upload)"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// A checked frame borrowed from a buffer: header fields plus the raw little-endian payload.
#[derive(Debug, Clone, Copy)]
pub struct FrameView<'a> {
    dtype: Dtype,
    payload: &'a [u8],
}

impl<'a> FrameView<'a> {
    /// Checks magic, version, dtype, flags, length and checksum; copies nothing.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FrameError> {
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            return Err(FrameError::TooShort { len: bytes.len() });
        }
        if bytes[0..4] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let dtype = Dtype::from_tag(bytes[6]).ok_or(FrameError::UnknownDtype(bytes[6]))?;
        if bytes[7] != 0 {
            return Err(FrameError::ReservedFlags(bytes[7]));
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&bytes[8..16]);
        let declared = u64::from_le_bytes(count);
        let body_end = bytes.len() - TRAILER_LEN;
        let payload = &bytes[HEADER_LEN..body_end];
        let expected_bytes = usize::try_from(declared)
            .ok()
            .and_then(|n| n.checked_mul(dtype.width()));
        if expected_bytes != Some(payload.len()) {
            return Err(FrameError::LengthMismatch {
                declared,
                payload_bytes: payload.len(),
            });
        }
        let mut trailer = [0u8; 4];
        trailer.copy_from_slice(&bytes[body_end..]);
        let expected = u32::from_le_bytes(trailer);
        let actual = crc32fast::hash(&bytes[..body_end]);
        if expected != actual {
            return Err(FrameError::Checksum { expected, actual });
        }
        Ok(Self { dtype, payload })
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.payload.len() / self.dtype.width()
    }

    /// Whether the frame holds no elements.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// The elements as f64 (exact for every dtype).
    pub fn iter_f64(&self) -> impl Iterator<Item = f64> + 'a {
        let dtype = self.dtype;
        self.payload
            .chunks_exact(dtype.width())
            .map(move |c| match dtype {
                Dtype::F32 => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                Dtype::U32 => f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                Dtype::F64 => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            })
    }

    /// The index of the first NaN or infinite element, if any: such an update would poison
    /// the running sum of every other client, so servers refuse it.
    pub fn first_non_finite(&self) -> Option<usize> {
        self.iter_f64().position(|v| !v.is_finite())
    }

    /// Copies the elements out as f32; `None` unless the dtype is f32.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        let mut out = Vec::new();
        self.f32_into(&mut out).then_some(out)
    }

    /// Replaces `out`'s contents with the elements as f32, keeping its allocation, so a server
    /// decoding one model-sized update after another allocates once; `false` (and `out`
    /// emptied) unless the dtype is f32.
    pub fn f32_into(&self, out: &mut Vec<f32>) -> bool {
        out.clear();
        if self.dtype != Dtype::F32 {
            return false;
        }
        out.extend(
            self.payload
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        true
    }

    /// Copies the elements out as u32 (masked SecAgg inputs); `None` unless the dtype is u32.
    pub fn to_u32_vec(&self) -> Option<Vec<u32>> {
        (self.dtype == Dtype::U32).then(|| {
            self.payload
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }
}

fn encode_with(dtype: Dtype, count: usize, write_payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + count * dtype.width() + TRAILER_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(dtype.tag());
    out.push(0);
    out.extend_from_slice(&(count as u64).to_le_bytes());
    write_payload(&mut out);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Encodes f32 elements.
pub fn encode_f32(values: &[f32]) -> Vec<u8> {
    encode_with(Dtype::F32, values.len(), |out| {
        values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()))
    })
}

/// Encodes f64 elements.
pub fn encode_f64(values: &[f64]) -> Vec<u8> {
    encode_with(Dtype::F64, values.len(), |out| {
        values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()))
    })
}

/// Encodes u32 elements (quantised, for secure aggregation).
pub fn encode_u32(values: &[u32]) -> Vec<u8> {
    encode_with(Dtype::U32, values.len(), |out| {
        values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()))
    })
}

/// The encoded size of a frame of `count` elements of `dtype`, for body limits.
pub fn encoded_len(dtype: Dtype, count: usize) -> usize {
    HEADER_LEN + count.saturating_mul(dtype.width()) + TRAILER_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn f32_into_reuses_the_buffer_and_refuses_other_dtypes() {
        let mut out = Vec::with_capacity(16);
        out.extend([9.0f32; 5]);
        let ptr = out.as_ptr();
        let bytes = encode_f32(&[1.5, -2.0, 3.25]);
        assert!(FrameView::parse(&bytes).unwrap().f32_into(&mut out));
        assert_eq!(out, [1.5, -2.0, 3.25]);
        assert_eq!(out.as_ptr(), ptr, "decoded into the same allocation");
        let ints = encode_u32(&[1, 2]);
        assert!(!FrameView::parse(&ints).unwrap().f32_into(&mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn layout_matches_the_readme() {
        let bytes = encode_f32(&[1.0, -2.0]);
        assert_eq!(&bytes[0..4], b"CVEC");
        assert_eq!(&bytes[4..6], &[1, 0]);
        assert_eq!(bytes[6], 1);
        assert_eq!(bytes[7], 0);
        assert_eq!(&bytes[8..16], &[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[16..20], &1.0f32.to_le_bytes());
        assert_eq!(&bytes[20..24], &(-2.0f32).to_le_bytes());
        assert_eq!(bytes.len(), encoded_len(Dtype::F32, 2));
        assert_eq!(&bytes[24..], &crc32fast::hash(&bytes[..24]).to_le_bytes());
    }

    #[test]
    fn each_header_fault_has_its_own_error() {
        let good = encode_f32(&[0.5; 3]);
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(FrameView::parse(&bad).err(), Some(FrameError::BadMagic));
        let mut bad = good.clone();
        bad[4] = 9;
        assert_eq!(
            FrameView::parse(&bad).err(),
            Some(FrameError::UnsupportedVersion(9))
        );
        let mut bad = good.clone();
        bad[6] = 7;
        assert_eq!(
            FrameView::parse(&bad).err(),
            Some(FrameError::UnknownDtype(7))
        );
        let mut bad = good.clone();
        bad[7] = 1;
        assert_eq!(
            FrameView::parse(&bad).err(),
            Some(FrameError::ReservedFlags(1))
        );
        let mut bad = good.clone();
        bad[8] = 4;
        assert!(matches!(
            FrameView::parse(&bad),
            Err(FrameError::LengthMismatch { declared: 4, .. })
        ));
        let mut bad = good.clone();
        bad[17] ^= 1;
        assert!(matches!(
            FrameView::parse(&bad),
            Err(FrameError::Checksum { .. })
        ));
        assert_eq!(
            FrameView::parse(&good[..10]).err(),
            Some(FrameError::TooShort { len: 10 })
        );
        // A count so large that count * width overflows must not panic.
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            FrameView::parse(&huge),
            Err(FrameError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn finds_non_finite_values() {
        let bytes = encode_f32(&[1.0, f32::NAN]);
        let frame = FrameView::parse(&bytes).unwrap();
        assert_eq!(frame.first_non_finite(), Some(1));
        let bytes = encode_f64(&[f64::INFINITY]);
        assert_eq!(
            FrameView::parse(&bytes).unwrap().first_non_finite(),
            Some(0)
        );
    }

    proptest! {
        #[test]
        fn f32_round_trips(values in proptest::collection::vec(any::<f32>(), 0..300)) {
            let bytes = encode_f32(&values);
            let frame = FrameView::parse(&bytes).unwrap();
            prop_assert_eq!(frame.dtype(), Dtype::F32);
            prop_assert_eq!(frame.len(), values.len());
            let back = frame.to_f32_vec().unwrap();
            prop_assert_eq!(back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }

        #[test]
        fn f64_and_u32_round_trip(f in proptest::collection::vec(-1e300f64..1e300, 0..100),
                                  u in proptest::collection::vec(any::<u32>(), 0..100)) {
            let bytes = encode_f64(&f);
            let back: Vec<f64> = FrameView::parse(&bytes).unwrap().iter_f64().collect();
            prop_assert_eq!(back, f);
            let bytes = encode_u32(&u);
            let back: Vec<f64> = FrameView::parse(&bytes).unwrap().iter_f64().collect();
            prop_assert_eq!(back, u.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
        }

        #[test]
        fn any_single_byte_flip_is_rejected(values in proptest::collection::vec(any::<f32>(), 1..64),
                                            pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode_f32(&values);
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(FrameView::parse(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = FrameView::parse(&bytes);
        }

        #[test]
        fn truncation_is_rejected(values in proptest::collection::vec(any::<f32>(), 1..64), cut in 1usize..8) {
            let bytes = encode_f32(&values);
            prop_assert!(FrameView::parse(&bytes[..bytes.len() - cut]).is_err());
        }
    }
}
