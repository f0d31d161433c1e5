//! Compressed answers, decoded for the meter only: an upstream that sends
//! `Content-Encoding: gzip`, `deflate` or `br` (some do whatever the
//! request asks) is metered on the decoded bytes, while the client gets the
//! bytes as they came. Decoding stops at [`DECODED_LIMIT`] bytes: past it
//! the meter sees no more (a compression bomb costs nothing but an
//! estimate).

use std::io::Write;

/// Most decoded bytes metered per answer.
pub const DECODED_LIMIT: usize = 64 * 1024 * 1024;

/// A content coding the meter can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// HTTP `deflate`: zlib-wrapped, or (from some servers) raw.
    Deflate,
    Brotli,
}

impl Coding {
    /// The coding of a `Content-Encoding` value; `None` for identity (or
    /// absent). `Err` for a coding (or a chain of them) it cannot read.
    pub fn of(header: Option<&str>) -> Result<Option<Coding>, String> {
        let Some(value) = header.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match value.to_ascii_lowercase().as_str() {
            "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            "br" => Ok(Some(Coding::Brotli)),
            other => Err(other.to_string()),
        }
    }
}

/// Where a decoder writes: at most `room` more bytes in all; a write past
/// it keeps what fits and fails, which stops the decoder at once. The
/// bound holds inside one chunk too: a few compressed bytes can stand for
/// gigabytes (a fuzzed 11-byte input made an unbounded output buffer grow
/// to 512 MiB before the limit was looked at).
struct Capped {
    out: Vec<u8>,
    room: usize,
}

impl Capped {
    fn new() -> Capped {
        Capped {
            out: Vec::new(),
            room: DECODED_LIMIT,
        }
    }
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            let fits = self.room;
            self.out.extend_from_slice(&buf[..fits]);
            self.room = 0;
            return Err(std::io::Error::other("the decoded limit is reached"));
        }
        self.out.extend_from_slice(buf);
        self.room -= buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Gzip(flate2::write::GzDecoder<Capped>),
    Zlib(flate2::write::ZlibDecoder<Capped>),
    RawDeflate(flate2::write::DeflateDecoder<Capped>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Capped>>),
    /// `deflate` or `br` before its first byte, which decides: for
    /// `deflate`, zlib or raw; for `br`, a stream in the large-window format
    /// (RFC 7932 does not allow it in HTTP; its window, and the decoder's
    /// ring buffer, may be up to 1 GiB) is not decoded. A fuzzed 11-byte
    /// input made the decoder allocate 512 MiB.
    Pending(Coding),
    /// Broken or past the limit: nothing more is decoded.
    Stopped,
}

/// A streaming decoder: compressed chunks in, decoded bytes out (at most
/// [`DECODED_LIMIT`] in all: its [`Capped`] output stops it there).
pub struct Decoder {
    inner: Inner,
}

impl Decoder {
    pub fn new(coding: Coding) -> Decoder {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(flate2::write::GzDecoder::new(Capped::new())),
            Coding::Deflate | Coding::Brotli => Inner::Pending(coding),
        };
        Decoder { inner }
    }

    /// Decodes one chunk; returns what it decoded (possibly nothing).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if let Inner::Pending(coding) = self.inner {
            let Some(&first) = chunk.first() else {
                return Vec::new();
            };
            self.inner = match coding {
                // A zlib stream starts with CM = 8 in the low nibble of its first byte.
                Coding::Deflate if first & 0x0f == 8 => {
                    Inner::Zlib(flate2::write::ZlibDecoder::new(Capped::new()))
                }
                Coding::Deflate => {
                    Inner::RawDeflate(flate2::write::DeflateDecoder::new(Capped::new()))
                }
                // WBITS bits 1, 000, 100 (read from the low bit): large window.
                Coding::Brotli if first & 0x7f == 0x11 => Inner::Stopped,
                Coding::Brotli => Inner::Brotli(Box::new(
                    brotli_decompressor::DecompressorWriter::new(Capped::new(), 4096),
                )),
                Coding::Gzip => Inner::Gzip(flate2::write::GzDecoder::new(Capped::new())),
            };
        }
        let (written, out) = match &mut self.inner {
            Inner::Gzip(d) => (d.write_all(chunk), std::mem::take(&mut d.get_mut().out)),
            Inner::Zlib(d) => (d.write_all(chunk), std::mem::take(&mut d.get_mut().out)),
            Inner::RawDeflate(d) => (d.write_all(chunk), std::mem::take(&mut d.get_mut().out)),
            Inner::Brotli(d) => (d.write_all(chunk), std::mem::take(&mut d.get_mut().out)),
            Inner::Pending(_) | Inner::Stopped => return Vec::new(),
        };
        if written.is_err() {
            self.inner = Inner::Stopped;
        }
        out
    }

    /// The end of the stream: whatever the decoder still held.
    pub fn finish(&mut self) -> Vec<u8> {
        let out = match std::mem::replace(&mut self.inner, Inner::Stopped) {
            Inner::Gzip(d) => d.finish().ok().map(|c| c.out),
            Inner::Zlib(d) => d.finish().ok().map(|c| c.out),
            Inner::RawDeflate(d) => d.finish().ok().map(|c| c.out),
            Inner::Brotli(mut d) => d
                .flush()
                .ok()
                .map(|()| std::mem::take(&mut d.get_mut().out)),
            Inner::Pending(_) | Inner::Stopped => None,
        };
        out.unwrap_or_default()
    }
}

/// Decodes a whole body (at most [`DECODED_LIMIT`] bytes of it).
pub fn decode_all(coding: Coding, body: &[u8]) -> Vec<u8> {
    let mut decoder = Decoder::new(coding);
    let mut out = decoder.push(body);
    out.extend(decoder.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] = b"data: {\"usage\":{\"prompt_tokens\":20000}}\n\ndata: [DONE]\n\n";

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_each_coding_split_at_every_byte() {
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(TEXT).unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(TEXT).unwrap();
        for (coding, encoded) in [
            (Coding::Gzip, gzip(TEXT)),
            (Coding::Deflate, zlib.finish().unwrap()),
            (Coding::Deflate, raw.finish().unwrap()),
        ] {
            let mut decoder = Decoder::new(coding);
            let mut out = Vec::new();
            for byte in &encoded {
                out.extend(decoder.push(std::slice::from_ref(byte)));
            }
            out.extend(decoder.finish());
            assert_eq!(out, TEXT, "{coding:?}");
            assert_eq!(decode_all(coding, &encoded), TEXT);
        }
    }

    #[test]
    fn output_stops_at_its_room_inside_one_write() {
        let mut capped = Capped {
            out: Vec::new(),
            room: 4,
        };
        assert!(capped.write_all(b"0123456789").is_err());
        assert_eq!(capped.out, b"0123");
        assert!(capped.write(b"x").is_err());
    }

    #[test]
    fn a_large_window_brotli_stream_is_not_decoded() {
        // Found by the fuzzer: these 11 bytes asked for a 512 MiB window.
        let bomb = [0x11, 0x1d, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode_all(Coding::Brotli, &bomb).is_empty());
    }

    #[test]
    fn decodes_brotli() {
        // TEXT ten times, compressed by the reference brotli encoder.
        const BR: [u8; 73] = [
            27, 37, 2, 16, 28, 5, 238, 46, 242, 45, 179, 141, 196, 113, 58, 66, 165, 167, 2, 76,
            95, 238, 109, 201, 216, 217, 82, 181, 43, 241, 50, 149, 144, 76, 72, 198, 252, 195, 6,
            28, 176, 71, 218, 50, 8, 47, 170, 23, 130, 68, 115, 136, 164, 200, 96, 41, 144, 46, 16,
            246, 166, 247, 215, 187, 15, 44, 121, 240, 82, 215, 112, 75, 12,
        ];
        let expected = TEXT.repeat(10);
        let mut decoder = Decoder::new(Coding::Brotli);
        let mut out = Vec::new();
        for piece in BR.chunks(7) {
            out.extend(decoder.push(piece));
        }
        out.extend(decoder.finish());
        assert_eq!(out, expected);
    }

    #[test]
    fn reads_the_header() {
        assert_eq!(Coding::of(None), Ok(None));
        assert_eq!(Coding::of(Some("GZIP")), Ok(Some(Coding::Gzip)));
        assert_eq!(Coding::of(Some("br")), Ok(Some(Coding::Brotli)));
        assert!(Coding::of(Some("gzip, br")).is_err());
    }

    #[test]
    fn garbage_stops_the_decoder_without_panicking() {
        let mut decoder = Decoder::new(Coding::Gzip);
        let _ = decoder.push(b"not gzip at all");
        assert!(decoder.push(b"more").is_empty());
        let _ = decoder.finish();
    }
}
