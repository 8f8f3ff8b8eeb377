//! Decoding a fuzz input: a few leading bytes choose the variant (API,
//! caps, chunking seed), the rest is the payload. The same decoding serves
//! the fuzz targets and the corpus tests, so a corpus file means the same
//! thing to both.

/// A fuzz input read from the front.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// The next byte (0 once the input is exhausted).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from(self.byte()) | (u16::from(self.byte()) << 8)
    }

    /// The next `n` bytes (fewer when the input ends).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// Bytes up to the next `sep` (not included; the separator is consumed).
    pub fn until(&mut self, sep: u8) -> &'a [u8] {
        match self.data.iter().position(|b| *b == sep) {
            Some(i) => {
                let head = &self.data[..i];
                self.data = &self.data[i + 1..];
                head
            }
            None => self.rest(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// A small deterministic generator (xorshift64*), seeded from the input.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Cut `len` bytes into chunk lengths: seed 0 is one chunk; otherwise chunks
/// of 1 to `1 + seed % 64` bytes (so small seeds give byte-by-byte splits).
pub fn chunk_lengths(seed: u16, len: usize) -> Vec<usize> {
    if seed == 0 || len == 0 {
        return vec![len];
    }
    let max = 1 + (seed as usize % 64);
    let mut rng = Rng::new(u64::from(seed));
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = (1 + rng.below(max)).min(left);
        out.push(n);
        left -= n;
    }
    out
}

/// `data` in chunks, see [`chunk_lengths`].
pub fn chunks(data: &[u8], seed: u16) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for n in chunk_lengths(seed, data.len()) {
        out.push(&data[at..at + n]);
        at += n;
    }
    out
}

/// `text` in pieces cut on char boundaries, see [`chunk_lengths`].
pub fn str_chunks(text: &str, seed: u16) -> Vec<&str> {
    let mut out = Vec::new();
    let mut at = 0;
    for n in chunk_lengths(seed, text.len()) {
        let mut end = (at + n).min(text.len()).max(at);
        while !text.is_char_boundary(end) {
            end += 1;
        }
        if end > at {
            out.push(&text[at..end]);
            at = end;
        }
        if at >= text.len() {
            break;
        }
    }
    if at < text.len() {
        out.push(&text[at..]);
    }
    out
}
