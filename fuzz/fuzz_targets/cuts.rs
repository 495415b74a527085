//! Cutting a fuzz input into chunks, the way a network might.

/// The input's first byte is a setting for the target, its second a seed for the cuts; the
/// rest is the body. `None` for inputs too short to hold them.
pub fn split(data: &[u8]) -> Option<(u8, u8, &[u8])> {
    match data {
        [setting, seed, body @ ..] => Some((*setting, *seed, body)),
        _ => None,
    }
}

/// `body` cut into chunks of 0 to a few bytes (empty chunks too), chosen by `seed`.
pub fn chunks(body: &[u8], seed: u8) -> Vec<&[u8]> {
    let longest = u64::from(seed % 16) + 1;
    let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = usize::try_from(state % (longest + 1))
            .unwrap_or(1)
            .min(rest.len());
        let (chunk, after) = rest.split_at(len);
        out.push(chunk);
        rest = after;
    }
    out
}
