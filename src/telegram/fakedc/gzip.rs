//! Just enough gzip for MTProto's `gzip_packed`, without a compression crate.
//!
//! grammers compresses requests of 512 bytes or more (`Compression::best`, so dynamic Huffman
//! blocks), which the fake must inflate; and the fake wraps large answers in `gzip_packed` using
//! *stored* (uncompressed) deflate blocks, which is valid gzip and exercises the client's path.
//! `flate2` is in the lock file only as a transitive dependency of grammers-mtproto, whose own
//! gzip helpers are crate-private, so this small inflater (after zlib's `puff.c`) avoids touching
//! `Cargo.toml`.

/// Why a gzip payload could not be inflated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GzipError {
    /// Not a gzip member, or an unsupported method.
    #[error("not a deflate gzip member")]
    BadHeader,
    /// The deflate stream ended early or is inconsistent.
    #[error("corrupt deflate stream")]
    Corrupt,
    /// The output would exceed the limit (a decompression bomb, or a client bug).
    #[error("inflated data exceeds {0} bytes")]
    TooLarge(usize),
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE), as gzip and the MTProto "full" transport use it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

/// Wraps `data` in a gzip member made of stored deflate blocks.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32 + data.len() / 65_535 * 5);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Inflates one gzip member (header flags honoured, trailer CRC checked).
pub fn gunzip(data: &[u8], max_out: usize) -> Result<Vec<u8>, GzipError> {
    if data.len() < 18 || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8 {
        return Err(GzipError::BadHeader);
    }
    let flags = data[3];
    let mut pos = 10usize;
    if flags & 4 != 0 {
        let xlen = u16::from_le_bytes([
            *data.get(pos).ok_or(GzipError::BadHeader)?,
            *data.get(pos + 1).ok_or(GzipError::BadHeader)?,
        ]) as usize;
        pos += 2 + xlen;
    }
    for flag in [8u8, 16] {
        if flags & flag != 0 {
            while *data.get(pos).ok_or(GzipError::BadHeader)? != 0 {
                pos += 1;
            }
            pos += 1;
        }
    }
    if flags & 2 != 0 {
        pos += 2;
    }
    let body = data.get(pos..).ok_or(GzipError::BadHeader)?;
    let (out, used) = inflate(body, max_out)?;
    let trailer = body.get(used..used + 8).ok_or(GzipError::Corrupt)?;
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc != crc32(&out) {
        return Err(GzipError::Corrupt);
    }
    Ok(out)
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u32,
    cnt: u32,
}

impl Bits<'_> {
    fn bits(&mut self, n: u32) -> Result<u32, GzipError> {
        while self.cnt < n {
            let b = *self.data.get(self.pos).ok_or(GzipError::Corrupt)?;
            self.pos += 1;
            self.buf |= (b as u32) << self.cnt;
            self.cnt += 8;
        }
        let v = self.buf & ((1u32 << n) - 1);
        self.buf = if n == 32 { 0 } else { self.buf >> n };
        self.cnt -= n;
        Ok(v)
    }
}

struct Huffman {
    count: [i32; 16],
    symbol: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Self {
        let mut count = [0i32; 16];
        for &l in lengths {
            count[l as usize] += 1;
        }
        let mut offs = [0usize; 16];
        for len in 1..15 {
            offs[len + 1] = offs[len] + count[len] as usize;
        }
        let mut symbol = vec![0u16; lengths.len()];
        for (sym, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbol[offs[l as usize]] = sym as u16;
                offs[l as usize] += 1;
            }
        }
        count[0] = 0;
        Self { count, symbol }
    }

    fn decode(&self, b: &mut Bits<'_>) -> Result<u16, GzipError> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= b.bits(1)? as i32;
            let count = self.count[len];
            if code - count < first {
                return self
                    .symbol
                    .get((index + (code - first)) as usize)
                    .copied()
                    .ok_or(GzipError::Corrupt);
            }
            index += count;
            first += count;
            first <<= 1;
            code <<= 1;
        }
        Err(GzipError::Corrupt)
    }
}

const LBASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEXT: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DBASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DEXT: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Inflates a raw deflate stream; returns the output and the number of input bytes used.
fn inflate(data: &[u8], max_out: usize) -> Result<(Vec<u8>, usize), GzipError> {
    let mut b = Bits {
        data,
        pos: 0,
        buf: 0,
        cnt: 0,
    };
    let mut out = Vec::new();
    loop {
        let last = b.bits(1)?;
        match b.bits(2)? {
            0 => {
                b.buf = 0;
                b.cnt = 0;
                let hdr = data.get(b.pos..b.pos + 4).ok_or(GzipError::Corrupt)?;
                let len = u16::from_le_bytes([hdr[0], hdr[1]]);
                let nlen = u16::from_le_bytes([hdr[2], hdr[3]]);
                if len != !nlen {
                    return Err(GzipError::Corrupt);
                }
                b.pos += 4;
                let chunk = data
                    .get(b.pos..b.pos + len as usize)
                    .ok_or(GzipError::Corrupt)?;
                out.extend_from_slice(chunk);
                b.pos += len as usize;
            }
            1 => {
                let mut l = [0u8; 288];
                l[..144].fill(8);
                l[144..256].fill(9);
                l[256..280].fill(7);
                l[280..].fill(8);
                codes(
                    &mut b,
                    &mut out,
                    &Huffman::new(&l),
                    &Huffman::new(&[5; 30]),
                    max_out,
                )?;
            }
            2 => {
                let (lit, dist) = dynamic_tables(&mut b)?;
                codes(&mut b, &mut out, &lit, &dist, max_out)?;
            }
            _ => return Err(GzipError::Corrupt),
        }
        if out.len() > max_out {
            return Err(GzipError::TooLarge(max_out));
        }
        if last == 1 {
            return Ok((out, b.pos));
        }
    }
}

fn dynamic_tables(b: &mut Bits<'_>) -> Result<(Huffman, Huffman), GzipError> {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let nlen = b.bits(5)? as usize + 257;
    let ndist = b.bits(5)? as usize + 1;
    let ncode = b.bits(4)? as usize + 4;
    if nlen > 286 || ndist > 30 {
        return Err(GzipError::Corrupt);
    }
    let mut cl = [0u8; 19];
    for &o in ORDER.iter().take(ncode) {
        cl[o] = b.bits(3)? as u8;
    }
    let clh = Huffman::new(&cl);
    let mut lengths = vec![0u8; nlen + ndist];
    let mut i = 0;
    while i < nlen + ndist {
        let sym = clh.decode(b)?;
        if sym < 16 {
            lengths[i] = sym as u8;
            i += 1;
            continue;
        }
        let (val, rep) = match sym {
            16 => {
                let prev = *lengths
                    .get(i.checked_sub(1).ok_or(GzipError::Corrupt)?)
                    .ok_or(GzipError::Corrupt)?;
                (prev, 3 + b.bits(2)? as usize)
            }
            17 => (0, 3 + b.bits(3)? as usize),
            _ => (0, 11 + b.bits(7)? as usize),
        };
        if i + rep > nlen + ndist {
            return Err(GzipError::Corrupt);
        }
        lengths[i..i + rep].fill(val);
        i += rep;
    }
    Ok((
        Huffman::new(&lengths[..nlen]),
        Huffman::new(&lengths[nlen..]),
    ))
}

fn codes(
    b: &mut Bits<'_>,
    out: &mut Vec<u8>,
    lit: &Huffman,
    dist: &Huffman,
    max_out: usize,
) -> Result<(), GzipError> {
    loop {
        let sym = lit.decode(b)? as usize;
        if sym < 256 {
            out.push(sym as u8);
        } else if sym == 256 {
            return Ok(());
        } else {
            let s = sym - 257;
            if s >= 29 {
                return Err(GzipError::Corrupt);
            }
            let len = LBASE[s] as usize + b.bits(LEXT[s] as u32)? as usize;
            let d = dist.decode(b)? as usize;
            if d >= 30 {
                return Err(GzipError::Corrupt);
            }
            let back = DBASE[d] as usize + b.bits(DEXT[d] as u32)? as usize;
            if back > out.len() {
                return Err(GzipError::Corrupt);
            }
            let start = out.len() - back;
            for k in 0..len {
                let byte = out[start + k];
                out.push(byte);
            }
        }
        if out.len() > max_out {
            return Err(GzipError::TooLarge(max_out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_round_trip() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(gunzip(&gzip_stored(&data), 1 << 20).unwrap(), data);
        assert_eq!(gunzip(&gzip_stored(&[]), 16).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn inflates_fixed_huffman_from_python_gzip() {
        // python3 -c "import gzip,sys; sys.stdout.buffer.write(gzip.compress(b'hello hello hello fake dc ' * 40, 9, mtime=0))"
        let packed = include_bytes!("testdata/hello.gz");
        let want = b"hello hello hello fake dc ".repeat(40);
        assert_eq!(gunzip(packed, 1 << 20).unwrap(), want);
    }

    #[test]
    fn inflates_dynamic_huffman_blocks() {
        // python3: gzip.compress(bytes(((i*i*7 + i//3) % 26) + 97 for i in range(3000)), 9, mtime=0)
        let packed = include_bytes!("testdata/mixed.gz");
        assert_eq!((packed[10] >> 1) & 3, 2, "fixture uses a dynamic block");
        let want: Vec<u8> = (0..3000u32)
            .map(|i| ((i * i * 7 + i / 3) % 26) as u8 + 97)
            .collect();
        assert_eq!(gunzip(packed, 1 << 20).unwrap(), want);
        assert_eq!(gunzip(packed, 100), Err(GzipError::TooLarge(100)));
    }
}
