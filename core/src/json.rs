//! A borrowing JSON reader for the admission hot path: it walks a body once, hands out
//! the few strings the webhook keeps, and skips everything else while checking it.
//!
//! Why not serde_json all the way: a Pod is mostly fields the webhook never reads
//! (managedFields, env, probes), and serde_json's generic skipping of them was the
//! largest single cost of an admission (about half of all instructions, measured with
//! callgrind on a 13 KB pod). This reader skips them in a tight loop.
//!
//! It is deliberately **no more permissive than serde_json**: whatever it accepts,
//! `serde_json::from_slice` accepts too and reads the same way (tests hold it to that,
//! on every fixture and on mutated ones). When it meets anything it is not sure about —
//! an escape it would have to decode into a surrogate, nesting deeper than
//! [`MAX_DEPTH`], a syntax error, a type other than the one expected — it answers
//! [`Decline`], and the caller reads the body with serde_json instead, which gives the
//! exact answer and error message as before.
//!
//! Pure: no I/O.

use std::borrow::Cow;

/// "Not sure: read this with serde_json." Not an error to report: the slow path
/// produces the real answer or error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decline;

/// Result of this module's functions.
pub type Read<T> = Result<T, Decline>;

/// Nesting deeper than this is declined (serde_json's typed reads stop at 128).
pub const MAX_DEPTH: u32 = 100;

/// A position in a JSON text.
#[derive(Debug)]
pub struct Reader<'a> {
    /// The whole text, checked to be UTF-8 once: every string is a slice of it.
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: u32,
}

/// An object being read: [`Object::next_key`] until it answers `None`.
#[derive(Debug)]
pub struct Object {
    first: bool,
}

/// An array being read: [`Array::next_item`] until it answers `false`.
#[derive(Debug)]
pub struct Array {
    first: bool,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`. Bytes that are not UTF-8 are declined as a
    /// whole (serde_json accepts them in strings it skips, and answers them itself).
    pub fn new(bytes: &'a [u8]) -> Read<Self> {
        let text = simdutf8::basic::from_utf8(bytes).map_err(|_| Decline)?;
        Ok(Self {
            text,
            bytes,
            pos: 0,
            depth: 0,
        })
    }

    /// The next byte after whitespace, not consumed.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        // The API server sends JSON without whitespace: check for none first.
        match self.bytes.get(self.pos) {
            Some(&byte) if byte > b' ' => Some(byte),
            _ => {
                self.skip_whitespace();
                self.bytes.get(self.pos).copied()
            }
        }
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Read<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Decline),
        }
    }

    /// Consumes a `null` if one comes next: `true` if it did.
    pub fn null(&mut self) -> Read<bool> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Starts reading an object; anything else is declined.
    pub fn object(&mut self) -> Read<Object> {
        self.expect(b'{')?;
        self.enter()?;
        Ok(Object { first: true })
    }

    /// Starts reading an array; anything else is declined.
    pub fn array(&mut self) -> Read<Array> {
        self.expect(b'[')?;
        self.enter()?;
        Ok(Array { first: true })
    }

    /// A string value, decoded (borrowed unless it has escapes).
    pub fn string(&mut self) -> Read<Cow<'a, str>> {
        self.expect(b'"')?;
        self.string_body()
    }

    /// A string or `null`.
    pub fn optional_string(&mut self) -> Read<Option<String>> {
        self.optional_str().map(|s| s.map(Cow::into_owned))
    }

    /// A string or `null`, borrowed from the body unless it has escapes.
    pub fn optional_str(&mut self) -> Read<Option<Cow<'a, str>>> {
        if self.null()? {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    /// `true` or `false`; anything else (`null` too) is declined.
    pub fn boolean(&mut self) -> Read<bool> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => Err(Decline),
        }
    }

    /// Checks one value as `serde_json::Value` reads it, keeping nothing: unlike
    /// [`Self::skip`] (serde's `IgnoredAny`), strings and keys are decoded, so a lone
    /// surrogate escape is refused. Numbers that could leave `f64`'s range (more than
    /// 24 characters, or an exponent of three digits) are declined rather than judged.
    pub fn check_value(&mut self) -> Read<()> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                self.check_string_body()
            }
            Some(b'{') => {
                let mut object = self.object()?;
                while object.next_checked_key(self)? {
                    self.check_value()?;
                }
                Ok(())
            }
            Some(b'[') => {
                let mut array = self.array()?;
                while array.next_item(self)? {
                    self.check_value()?;
                }
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.pos = number_end(self.bytes, self.pos)?;
                let number = self.bytes.get(start..self.pos).ok_or(Decline)?;
                let exponent = number
                    .iter()
                    .position(|&b| b == b'e' || b == b'E')
                    .map_or(0, |at| number.len() - at);
                if number.len() > 24 || exponent > 3 {
                    return Err(Decline);
                }
                Ok(())
            }
            Some(b't' | b'f') => self.boolean().map(drop),
            Some(b'n') => self.literal(b"null"),
            _ => Err(Decline),
        }
    }

    /// A string, checked as serde_json decodes it but not kept.
    pub fn check_string(&mut self) -> Read<()> {
        self.expect(b'"')?;
        self.check_string_body()
    }

    /// The rest of a string whose opening quote was read, checked as serde_json decodes
    /// it: surrogate escapes must come in pairs (serde_json refuses a lone one).
    fn check_string_body(&mut self) -> Read<()> {
        loop {
            self.advance_to_special();
            match self.byte()? {
                b'"' => {
                    self.pos += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.pos += 1;
                    if self.byte()? != b'u' {
                        self.escape()?;
                        continue;
                    }
                    self.pos += 1;
                    match self.hex4()? {
                        0xD800..=0xDBFF => {
                            self.literal(b"\\u")?;
                            if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                                return Err(Decline);
                            }
                        }
                        0xDC00..=0xDFFF => return Err(Decline),
                        _ => {}
                    }
                }
                _ => return Err(Decline),
            }
        }
    }

    /// Skips one value of any kind, checking that it is well-formed JSON.
    pub fn skip(&mut self) -> Read<()> {
        self.pos = skip_value(self.bytes, self.pos, self.depth)?;
        Ok(())
    }

    #[cold]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn byte(&self) -> Read<u8> {
        self.bytes.get(self.pos).copied().ok_or(Decline)
    }

    fn expect(&mut self, byte: u8) -> Read<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Decline)
        }
    }

    fn enter(&mut self) -> Read<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Decline)
        } else {
            Ok(())
        }
    }

    fn literal(&mut self, word: &[u8]) -> Read<()> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Decline)
        }
    }

    /// Moves to the next `"`, `\` or control character of a string (or the end).
    #[inline(always)]
    fn advance_to_special(&mut self) {
        self.pos = advance_to_special(self.bytes, self.pos);
    }

    fn hex4(&mut self) -> Read<u16> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(Decline)?;
        let mut value: u16 = 0;
        for &digit in digits {
            let nibble = char::from(digit).to_digit(16).ok_or(Decline)?;
            value = (value << 4) | u16::try_from(nibble).map_err(|_| Decline)?;
        }
        self.pos += 4;
        Ok(value)
    }

    /// The rest of a string whose opening quote was read, decoded as serde_json decodes
    /// a string it keeps: valid UTF-8, escapes replaced. A `\u` escape of a surrogate
    /// is declined (serde_json pairs them or refuses them; rare enough to leave to it).
    fn string_body(&mut self) -> Read<Cow<'a, str>> {
        let start = self.pos;
        self.advance_to_special();
        if self.bytes.get(self.pos) == Some(&b'"') {
            let text = self.text.get(start..self.pos).ok_or(Decline)?;
            self.pos += 1;
            return Ok(Cow::Borrowed(text));
        }
        self.escaped_string_body(start).map(Cow::Owned)
    }

    /// The rest of a string with escapes, from `start` (after its opening quote).
    #[cold]
    fn escaped_string_body(&mut self, start: usize) -> Read<String> {
        let mut owned = String::new();
        let mut run = start;
        loop {
            owned.push_str(self.text.get(run..self.pos).ok_or(Decline)?);
            match self.byte()? {
                b'"' => {
                    self.pos += 1;
                    return Ok(owned);
                }
                b'\\' => {
                    self.pos += 1;
                    owned.push(self.escape()?);
                    run = self.pos;
                }
                _ => return Err(Decline),
            }
            self.advance_to_special();
        }
    }

    fn escape(&mut self) -> Read<char> {
        let byte = self.byte()?;
        self.pos += 1;
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => char::from_u32(u32::from(self.hex4()?)).ok_or(Decline)?,
            _ => return Err(Decline),
        })
    }
}

/// The end of the value that starts at `pos` (after whitespace), checked to be
/// well-formed; `depth` containers are open around it. One loop with the position in a
/// local: the bulk of a pod goes through here.
fn skip_value(bytes: &[u8], mut pos: usize, depth: u32) -> Read<usize> {
    // Containers opened here, innermost in the lowest bit: 1 = object.
    let mut open: u128 = 0;
    let mut levels: u32 = 0;
    // Whitespace is rare (the API server sends none): it is skipped where a structural
    // byte was expected, not looked for before every token.
    loop {
        let byte = *bytes.get(pos).ok_or(Decline)?;
        if byte == b'{' || byte == b'[' {
            if depth + levels >= MAX_DEPTH {
                return Err(Decline);
            }
            let is_object = byte == b'{';
            pos = at_token(bytes, pos + 1);
            let closing = if is_object { b'}' } else { b']' };
            if bytes.get(pos) == Some(&closing) {
                pos += 1;
            } else {
                open = (open << 1) | u128::from(is_object);
                levels += 1;
                if is_object {
                    pos = past_key(bytes, pos)?;
                }
                continue;
            }
        } else if byte == b'"' {
            pos = string_end(bytes, pos + 1)?;
        } else {
            match scalar_end(bytes, pos, byte)? {
                Some(end) => pos = end,
                None => {
                    pos += 1;
                    continue;
                }
            }
        }
        // A value ended: close the containers it ends, or go on to the next value.
        loop {
            if levels == 0 {
                return Ok(pos);
            }
            let in_object = open & 1 == 1;
            match bytes.get(pos) {
                Some(b',') => {
                    pos += 1;
                    if in_object {
                        pos = past_key(bytes, pos)?;
                    }
                    break;
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                Some(b' ' | b'\n' | b'\t' | b'\r') => {
                    pos += 1;
                    continue;
                }
                _ => return Err(Decline),
            }
            pos += 1;
            open >>= 1;
            levels -= 1;
        }
    }
}

/// The end of the literal or number that starts with `byte` at `pos`, or `None` for
/// whitespace (the caller moves on by one byte). Out of [`skip_value`]'s loop so that
/// the loop's two common cases, a container and a string, stay plain branches instead
/// of becoming entries of a jump table (1-2 % of a review's reading, criterion).
#[inline(never)]
fn scalar_end(bytes: &[u8], pos: usize, byte: u8) -> Read<Option<usize>> {
    Ok(Some(match byte {
        b't' => past_literal(bytes, pos, b"true")?,
        b'f' => past_literal(bytes, pos, b"false")?,
        b'n' => past_literal(bytes, pos, b"null")?,
        b'-' | b'0'..=b'9' => number_end(bytes, pos)?,
        b' ' | b'\n' | b'\t' | b'\r' => return Ok(None),
        _ => return Err(Decline),
    }))
}

/// `pos`, or past the whitespace there (checked with one comparison first).
#[inline(always)]
fn at_token(bytes: &[u8], pos: usize) -> usize {
    if bytes.get(pos).is_some_and(|&byte| byte <= b' ') {
        past_whitespace(bytes, pos)
    } else {
        pos
    }
}

/// Past the whitespace at `pos`.
#[cold]
fn past_whitespace(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// Past a member's key and its colon, and the whitespace after it.
#[inline(always)]
fn past_key(bytes: &[u8], mut pos: usize) -> Read<usize> {
    if bytes.get(pos) != Some(&b'"') {
        pos = past_whitespace(bytes, pos);
        if bytes.get(pos) != Some(&b'"') {
            return Err(Decline);
        }
    }
    pos = string_end(bytes, pos + 1)?;
    if bytes.get(pos) != Some(&b':') {
        pos = past_whitespace(bytes, pos);
        if bytes.get(pos) != Some(&b':') {
            return Err(Decline);
        }
    }
    Ok(pos + 1)
}

fn past_literal(bytes: &[u8], pos: usize, word: &[u8]) -> Read<usize> {
    if bytes.get(pos..pos + word.len()) == Some(word) {
        Ok(pos + word.len())
    } else {
        Err(Decline)
    }
}

/// The end of `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` at `pos`, as serde_json
/// reads numbers.
fn number_end(bytes: &[u8], mut pos: usize) -> Read<usize> {
    let digits = |mut pos: usize| {
        let start = pos;
        while let Some(b'0'..=b'9') = bytes.get(pos) {
            pos += 1;
        }
        (pos, pos > start)
    };
    if bytes.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match bytes.get(pos) {
        Some(b'0') => pos += 1,
        Some(b'1'..=b'9') => pos = digits(pos).0,
        _ => return Err(Decline),
    }
    if bytes.get(pos) == Some(&b'.') {
        let (end, any) = digits(pos + 1);
        if !any {
            return Err(Decline);
        }
        pos = end;
    }
    if let Some(b'e' | b'E') = bytes.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = bytes.get(pos) {
            pos += 1;
        }
        let (end, any) = digits(pos);
        if !any {
            return Err(Decline);
        }
        pos = end;
    }
    // serde_json refuses `01`: a digit right after a leading zero ends nothing.
    match bytes.get(pos) {
        Some(b'0'..=b'9') => Err(Decline),
        _ => Ok(pos),
    }
}

/// The position after the closing quote of the string whose body starts at `pos`,
/// escapes checked as serde_json checks the strings it skips.
#[inline(always)]
fn string_end(bytes: &[u8], mut pos: usize) -> Read<usize> {
    loop {
        pos = advance_to_special(bytes, pos);
        match bytes.get(pos) {
            Some(b'"') => return Ok(pos + 1),
            Some(b'\\') => pos = escape_end(bytes, pos + 1)?,
            _ => return Err(Decline),
        }
    }
}

/// Past an escape whose backslash is just before `pos`. Not cold: managedFields keys
/// (`k:{\"name\":\"app\"}`) put a few escapes in every real pod.
#[inline(always)]
fn escape_end(bytes: &[u8], pos: usize) -> Read<usize> {
    match bytes.get(pos) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(pos + 1),
        Some(b'u') => unicode_escape_end(bytes, pos),
        _ => Err(Decline),
    }
}

/// Past a `\uXXXX` escape whose `u` is at `pos`.
#[cold]
fn unicode_escape_end(bytes: &[u8], pos: usize) -> Read<usize> {
    let digits = bytes.get(pos + 1..pos + 5).ok_or(Decline)?;
    if digits.iter().all(u8::is_ascii_hexdigit) {
        Ok(pos + 5)
    } else {
        Err(Decline)
    }
}

/// The position of the next `"`, `\` or control character from `pos` (or the end).
#[inline(always)]
fn advance_to_special(bytes: &[u8], mut pos: usize) -> usize {
    // Sixteen bytes at a time while there are sixteen left: most strings of a pod
    // (keys, names, short values; 11 bytes on average) end within the first chunk.
    while let Some(chunk) = bytes.get(pos..).and_then(<[u8]>::first_chunk::<16>) {
        let special = specials_in_chunk(chunk);
        if special != 0 {
            return pos + special.trailing_zeros() as usize;
        }
        pos += 16;
    }
    while let Some(&byte) = bytes.get(pos) {
        if byte < 0x20 || byte == b'"' || byte == b'\\' {
            return pos;
        }
        pos += 1;
    }
    pos
}

/// Bits for the 16-byte `chunk`, lowest for its first byte: the lowest set bit marks
/// its first `"`, `\` or control character (below 0x20); no bit is set without one.
#[inline(always)]
fn specials_in_chunk(chunk: &[u8; 16]) -> u32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    return specials_sse2(chunk);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    return specials_swar(chunk);
}

/// [`specials_in_chunk`] with SSE2 (every x86-64 CPU has it): all sixteen bytes
/// compared at once, every special byte's bit set. Against the eight-bytes-at-a-time
/// [`specials_swar`], a whole review 1.4 % faster for 1 container, 2.5 % for 3 and
/// 4.2 % for 50 (criterion): most strings end in the first chunk instead of the second.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn specials_sse2(chunk: &[u8; 16]) -> u32 {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };
    let chunk = load_unaligned_m128i(chunk);
    let quote = cmp_eq_mask_i8_m128i(chunk, set_splat_i8_m128i(b'"' as i8));
    let backslash = cmp_eq_mask_i8_m128i(chunk, set_splat_i8_m128i(b'\\' as i8));
    // Unsigned: min(byte, 0x1f) == byte exactly for the bytes below 0x20.
    let control = cmp_eq_mask_i8_m128i(min_u8_m128i(chunk, set_splat_i8_m128i(0x1f)), chunk);
    // 16 bits, one per byte.
    move_mask_i8_m128i(quote | backslash | control).cast_unsigned()
}

/// [`specials_in_chunk`] without vector instructions, eight bytes at a time in a
/// `u64`, only the lowest bit set: a byte below 0x20, a `"` or a `\` sets its high bit
/// in `special` (bytes from 0x80 never do), but a borrow may carry a false alarm into
/// the bytes after the first real one.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2"),
    allow(
        dead_code,
        reason = "tested against specials_sse2 here, used elsewhere"
    )
)]
#[inline(always)]
fn specials_swar(chunk: &[u8; 16]) -> u32 {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    for (half, bytes) in chunk.chunks_exact(8).enumerate() {
        let mut word = [0; 8];
        word.copy_from_slice(bytes);
        let word = u64::from_le_bytes(word);
        let control = word.wrapping_sub(ONES * 0x20) & !word;
        let quote = word ^ (ONES * u64::from(b'"'));
        let quote = quote.wrapping_sub(ONES) & !quote;
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let backslash = backslash.wrapping_sub(ONES) & !backslash;
        let special = (control | quote | backslash) & HIGH;
        if special != 0 {
            return 1 << (half * 8 + (special.trailing_zeros() / 8) as usize);
        }
    }
    0
}

impl Object {
    /// The next member's key (its colon consumed; read or skip its value next), or
    /// `None` at the closing brace.
    pub fn next_key<'a>(&mut self, reader: &mut Reader<'a>) -> Read<Option<Cow<'a, str>>> {
        if !self.at_member(reader)? {
            return Ok(None);
        }
        let key = reader.string()?;
        reader.expect(b':')?;
        Ok(Some(key))
    }

    /// Like [`Self::next_key`] for a key that is only checked (decoded as serde_json
    /// decodes it, surrogate pairs included) and not kept: whether there is one.
    pub fn next_checked_key(&mut self, reader: &mut Reader<'_>) -> Read<bool> {
        if !self.at_member(reader)? {
            return Ok(false);
        }
        reader.check_string()?;
        reader.expect(b':')?;
        Ok(true)
    }

    /// Past the comma before the next member's key (`true`), or past the closing
    /// brace (`false`).
    #[inline(always)]
    fn at_member(&mut self, reader: &mut Reader<'_>) -> Read<bool> {
        match reader.peek() {
            Some(b'}') => {
                reader.pos += 1;
                reader.depth -= 1;
                return Ok(false);
            }
            Some(b',') if !self.first => reader.pos += 1,
            Some(b'"') if self.first => {}
            _ => return Err(Decline),
        }
        self.first = false;
        Ok(true)
    }
}

/// The members of one object read so far, by their place in its `match`: serde's
/// derived structs refuse a member given twice, and so do the readers built on this.
#[derive(Debug, Default)]
pub struct Seen(u32);

impl Seen {
    /// Marks member `field` (below 32) as read; declines if it already was.
    pub fn first(&mut self, field: u8) -> Read<()> {
        let bit = 1_u32.checked_shl(u32::from(field)).ok_or(Decline)?;
        if self.0 & bit != 0 {
            return Err(Decline);
        }
        self.0 |= bit;
        Ok(())
    }

    /// Whether member `field` was read.
    pub fn has(&self, field: u8) -> bool {
        1_u32
            .checked_shl(u32::from(field))
            .is_some_and(|bit| self.0 & bit != 0)
    }
}

impl Array {
    /// Whether another item follows (read or skip it next); `false` at the closing
    /// bracket.
    pub fn next_item(&mut self, reader: &mut Reader<'_>) -> Read<bool> {
        match reader.peek() {
            Some(b']') => {
                reader.pos += 1;
                reader.depth -= 1;
                return Ok(false);
            }
            Some(b',') if !self.first => reader.pos += 1,
            Some(_) if self.first => {}
            _ => return Err(Decline),
        }
        self.first = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skips(text: &str) -> bool {
        let Ok(mut reader) = Reader::new(text.as_bytes()) else {
            return false;
        };
        reader.skip().is_ok() && reader.end().is_ok()
    }

    /// Where the first special byte of `chunk` is, byte by byte.
    fn first_special(chunk: &[u8; 16]) -> Option<u32> {
        (0u32..)
            .zip(chunk)
            .find(|&(_, &b)| b < 0x20 || b == b'"' || b == b'\\')
            .map(|(at, _)| at)
    }

    fn lowest_bit(mask: u32) -> Option<u32> {
        (mask != 0).then(|| mask.trailing_zeros())
    }

    #[test]
    fn every_byte_at_every_place_of_a_chunk_is_told_special_or_not() {
        // Fillers from each range the word-wise check treats apart.
        for filler in [b'a', b' ', 0x7f, 0x80, 0xff, b'!', b'#', b']'] {
            for byte in 0..=u8::MAX {
                for at in 0..16 {
                    let mut chunk = [filler; 16];
                    chunk[at] = byte;
                    let expected = first_special(&chunk);
                    assert_eq!(lowest_bit(specials_swar(&chunk)), expected, "{chunk:?}");
                    assert_eq!(lowest_bit(specials_in_chunk(&chunk)), expected, "{chunk:?}");
                }
            }
        }
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[test]
    fn sse2_marks_each_special_byte_of_a_chunk() {
        let chunk = *b"a\"b\\c\x1fd\x00\xffe\x20\x7f\x80\"\tz";
        let expected = (0..16).fold(0, |mask, at| {
            let b = chunk[at];
            mask | u32::from(b < 0x20 || b == b'"' || b == b'\\') << at
        });
        assert_eq!(specials_sse2(&chunk), expected);
        assert_eq!(expected, 0b0110_0000_1010_1010);
    }

    proptest::proptest! {
        #[test]
        fn the_first_special_byte_of_any_chunk_is_found(chunk: [u8; 16]) {
            let expected = first_special(&chunk);
            proptest::prop_assert_eq!(lowest_bit(specials_swar(&chunk)), expected);
            proptest::prop_assert_eq!(lowest_bit(specials_in_chunk(&chunk)), expected);
        }
    }

    #[rstest::rstest]
    #[case::scalars(r#"[true,false,null,0,-0,1.5,-2e10,3E+2,4e-1,"",12345678901234567890123]"#)]
    #[case::nested(r#"{"a":{"b":[[],{},[{}]],"c":"d"},"e":[1,[2,[3]]]}"#)]
    #[case::whitespace(" \t\n\r{ \"a\" : [ 1 , 2 ] } \n")]
    #[case::escapes(r#"["\"\\\/\b\f\n\r\t\u00e9\uD800\udc00", "a\u0000b"]"#)]
    #[case::long_strings(
        r#"["0123456789abcdef0123456789abcdef\"", "é日本語 text that is long enough"]"#
    )]
    fn accepts_what_serde_json_accepts(#[case] text: &str) {
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
        assert!(skips(text), "{text}");
    }

    #[rstest::rstest]
    #[case::trailing_comma_array("[1,]")]
    #[case::trailing_comma_object(r#"{"a":1,}"#)]
    #[case::leading_zero("01")]
    #[case::leading_zero_negative("-01")]
    #[case::bare_minus("-")]
    #[case::empty_fraction("1.")]
    #[case::empty_exponent("1e")]
    #[case::plus("+1")]
    #[case::control_character("\"a\u{1}b\"")]
    #[case::bad_escape(r#""\x""#)]
    #[case::short_unicode_escape(r#""\u12""#)]
    #[case::unterminated("\"abc")]
    #[case::unclosed("[1,{\"a\":2}")]
    #[case::mismatched("[1}")]
    #[case::key_not_string("{1:2}")]
    #[case::missing_colon(r#"{"a" 1}"#)]
    #[case::literal_typo("nul")]
    #[case::two_values("1 2")]
    #[case::empty("")]
    fn declines_what_serde_json_refuses(#[case] text: &str) {
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_err());
        assert!(!skips(text), "{text}");
    }

    #[test]
    fn declines_nesting_deeper_than_the_limit() {
        let depth = usize::try_from(MAX_DEPTH).unwrap();
        let within = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(skips(&within));
        let beyond = format!("{}{}", "[".repeat(depth + 1), "]".repeat(depth + 1));
        assert!(!skips(&beyond));
    }

    #[test]
    fn strings_are_decoded_like_serde_json_decodes_them() {
        for text in [
            r#""plain""#,
            r#""a\"b\\c\/d\n\u00e9\u65e5""#,
            r#""https://x.example/?a=1\u0026b=2""#,
            "\"日本語\"",
        ] {
            let expected: String = serde_json::from_str(text).unwrap();
            assert_eq!(
                Reader::new(text.as_bytes()).unwrap().string().unwrap(),
                expected
            );
        }
        // Left to serde_json: surrogates, and bytes that are not UTF-8 anywhere.
        assert_eq!(
            Reader::new(br#""\ud83d\ude00""#).unwrap().string(),
            Err(Decline)
        );
        assert!(Reader::new(b"\"\xff\"").is_err());
    }

    /// `check_value` accepts what `serde_json::Value` reads, never more; numbers that
    /// could leave f64's range and strings it cannot vouch for are declined.
    #[rstest::rstest]
    #[case::scalars(r#"[true,false,null,0,-1.5e3,"x"]"#, true)]
    #[case::surrogate_pair_in_key_and_value(r#"{"k\ud83d\ude00":"\ud83d\ude00"}"#, true)]
    #[case::escapes(r#"["\"\\\/\b\f\n\r\t\u00e9"]"#, true)]
    #[case::lone_high_surrogate(r#"["\ud800"]"#, false)]
    #[case::lone_low_surrogate(r#"["\udc00x"]"#, false)]
    #[case::high_then_other_escape(r#"["\ud800\n"]"#, false)]
    #[case::high_then_high(r#"["\ud800\ud800"]"#, false)]
    #[case::lone_surrogate_key(r#"{"\ud800":1}"#, false)]
    #[case::huge_number("[1e400]", false)]
    #[case::long_number("[1234567890123456789012345]", false)]
    #[case::malformed("[1,]", false)]
    fn check_value_reads_as_serde_json_value_reads(#[case] text: &str, #[case] accepted: bool) {
        let checked = Reader::new(text.as_bytes())
            .and_then(|mut reader| reader.check_value().and_then(|()| reader.end()));
        assert_eq!(checked.is_ok(), accepted, "{text}");
        if accepted {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn booleans_and_repeated_members() {
        assert_eq!(Reader::new(b"true").unwrap().boolean(), Ok(true));
        assert_eq!(Reader::new(b" false").unwrap().boolean(), Ok(false));
        assert_eq!(Reader::new(b"null").unwrap().boolean(), Err(Decline));
        assert_eq!(Reader::new(b"\"true\"").unwrap().boolean(), Err(Decline));
        let mut seen = Seen::default();
        assert_eq!(seen.first(3), Ok(()));
        assert!(seen.has(3) && !seen.has(4));
        assert_eq!(seen.first(3), Err(Decline));
        assert_eq!(seen.first(32), Err(Decline));
    }

    #[test]
    fn objects_and_arrays_are_walked_member_by_member() {
        let mut reader = Reader::new(br#"{"a": [1, "x"], "b": null, "c": {}}"#).unwrap();
        let mut object = reader.object().unwrap();
        let mut seen = Vec::new();
        while let Some(key) = object.next_key(&mut reader).unwrap() {
            match &*key {
                "a" => {
                    let mut array = reader.array().unwrap();
                    let mut items = 0;
                    while array.next_item(&mut reader).unwrap() {
                        reader.skip().unwrap();
                        items += 1;
                    }
                    assert_eq!(items, 2);
                }
                "b" => assert!(reader.null().unwrap()),
                _ => reader.skip().unwrap(),
            }
            seen.push(key.into_owned());
        }
        reader.end().unwrap();
        assert_eq!(seen, ["a", "b", "c"]);
    }
}
