//! Just enough of Structured Field Values (RFC 9651) to read the `RateLimit` and
//! `RateLimit-Policy` fields: a strict List parser that keeps, of each member, its name and the
//! parameters those fields define. It never allocates and never panics.

/// A bare item, as far as the rate-limit fields care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bare<'a> {
    Integer(i64),
    /// A string's content with its escapes (canonical in RFC 9651), or a token.
    Name(&'a [u8]),
    /// A byte sequence's base64 text, between the colons.
    Bytes(&'a [u8]),
    /// A decimal, a boolean, a date, a display string or an inner list.
    Other,
}

/// One member of a List: its item and the parameters of interest (the last of each key wins,
/// as RFC 9651 says).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Member<'a> {
    pub(super) item: Option<Bare<'a>>,
    pub(super) r: Option<Bare<'a>>,
    pub(super) t: Option<Bare<'a>>,
    pub(super) q: Option<Bare<'a>>,
    pub(super) w: Option<Bare<'a>>,
    pub(super) pk: Option<Bare<'a>>,
}

impl<'a> Member<'a> {
    /// The policy name: a string or a token.
    pub(super) fn name(&self) -> Option<&'a [u8]> {
        match self.item {
            Some(Bare::Name(name)) => Some(name),
            _ => None,
        }
    }
}

/// Calls `f` with each member of the List in `input`, if all of `input` is a valid List;
/// `None` (and no call) otherwise.
pub(super) fn for_each_member<'a>(input: &'a [u8], mut f: impl FnMut(Member<'a>)) -> Option<()> {
    // Validate the whole field first: a field that fails to parse is ignored as a whole.
    parse_list(input, |_| {})?;
    parse_list(input, &mut f)
}

fn parse_list<'a>(input: &'a [u8], mut f: impl FnMut(Member<'a>)) -> Option<()> {
    let mut p = Parser { s: input, i: 0 };
    p.skip_sp();
    // Trailing spaces are discarded too (RFC 9651 §4.2).
    while p.s.last() == Some(&b' ') {
        p.s = &p.s[..p.s.len() - 1];
    }
    if p.at_end() {
        return Some(());
    }
    loop {
        f(p.member()?);
        p.skip_ows();
        if p.at_end() {
            return Some(());
        }
        if p.next()? != b',' {
            return None;
        }
        p.skip_ows();
        if p.at_end() {
            return None;
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn member(&mut self) -> Option<Member<'a>> {
        let item = if self.peek() == Some(b'(') {
            self.inner_list()?;
            Bare::Other
        } else {
            self.bare_item()?
        };
        let mut member = Member {
            item: Some(item),
            ..Member::default()
        };
        while self.peek() == Some(b';') {
            self.i += 1;
            self.skip_sp();
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.i += 1;
                self.bare_item()?
            } else {
                Bare::Other // boolean true
            };
            let slot = match key {
                b"r" => &mut member.r,
                b"t" => &mut member.t,
                b"q" => &mut member.q,
                b"w" => &mut member.w,
                b"pk" => &mut member.pk,
                _ => continue,
            };
            *slot = Some(value);
        }
        Some(member)
    }

    fn inner_list(&mut self) -> Option<()> {
        self.i += 1; // '('
        loop {
            self.skip_sp();
            if self.peek() == Some(b')') {
                self.i += 1;
                return Some(());
            }
            self.member()?;
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return None;
            }
        }
    }

    fn key(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        if !matches!(self.peek(), Some(b'a'..=b'z' | b'*')) {
            return None;
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.i += 1;
        }
        Some(&self.s[start..self.i])
    }

    fn bare_item(&mut self) -> Option<Bare<'a>> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => {
                self.i += 1;
                self.string().map(Bare::Name)
            }
            b'*' | b'A'..=b'Z' | b'a'..=b'z' => Some(Bare::Name(self.token())),
            b':' => self.bytes(),
            b'?' => {
                self.i += 1;
                matches!(self.next()?, b'0' | b'1').then_some(Bare::Other)
            }
            b'@' => {
                self.i += 1;
                match self.number()? {
                    Bare::Integer(_) => Some(Bare::Other),
                    _ => None,
                }
            }
            b'%' => {
                self.i += 1;
                self.display_string()
            }
            _ => None,
        }
    }

    /// An Integer (up to 15 digits) or a Decimal (up to 12 digits, a dot, 1 to 3 digits).
    fn number(&mut self) -> Option<Bare<'a>> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = &self.s[start..self.i];
        if digits.is_empty() {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let fraction = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let fraction = self.i - fraction;
            return (digits.len() <= 12 && (1..=3).contains(&fraction)).then_some(Bare::Other);
        }
        if digits.len() > 15 {
            return None;
        }
        // At most 15 digits: no overflow.
        let value = digits
            .iter()
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
        Some(Bare::Integer(if negative { -value } else { value }))
    }

    /// The content of a String, after its opening quote, escapes included.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        loop {
            match self.next()? {
                b'"' => return Some(&self.s[start..self.i - 1]),
                b'\\' => {
                    if !matches!(self.next()?, b'"' | b'\\') {
                        return None;
                    }
                }
                0x20..=0x7e => {}
                _ => return None,
            }
        }
    }

    fn token(&mut self) -> &'a [u8] {
        let start = self.i;
        self.i += 1;
        while let Some(c) = self.peek() {
            let tchar = c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c);
            if !tchar {
                break;
            }
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    fn bytes(&mut self) -> Option<Bare<'a>> {
        self.i += 1; // ':'
        let start = self.i;
        loop {
            match self.next()? {
                b':' => return Some(Bare::Bytes(&self.s[start..self.i - 1])),
                c if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=') => {}
                _ => return None,
            }
        }
    }

    fn display_string(&mut self) -> Option<Bare<'a>> {
        if self.next()? != b'"' {
            return None;
        }
        loop {
            match self.next()? {
                b'"' => return Some(Bare::Other),
                b'%' => {
                    for _ in 0..2 {
                        if !matches!(self.next()?, b'0'..=b'9' | b'a'..=b'f') {
                            return None;
                        }
                    }
                }
                0x20..=0x7e => {}
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(s: &str) -> Option<Vec<Member<'_>>> {
        let mut out = Vec::new();
        for_each_member(s.as_bytes(), |m| out.push(m))?;
        Some(out)
    }

    #[test]
    fn reads_the_draft_examples() {
        let list = members(r#""default";r=50;t=30, "daily";r=0;t=3600;pk=:cHJvamVjdA==:"#).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name(), Some(&b"default"[..]));
        assert_eq!(list[0].r, Some(Bare::Integer(50)));
        assert_eq!(list[0].t, Some(Bare::Integer(30)));
        assert_eq!(list[1].pk, Some(Bare::Bytes(b"cHJvamVjdA==")));
        let list = members(r#"burst;q=100;w=60;qu="requests", day;q=1000;w=86400"#).unwrap();
        assert_eq!(list[1].name(), Some(&b"day"[..]));
        assert_eq!(list[1].w, Some(Bare::Integer(86400)));
    }

    #[test]
    fn other_item_kinds_are_skipped_over() {
        let list = members(
            r#"?1;r=1, @1700000000, %"caf%c3%a9", 1.5;r=2, (a "b" 3);r=3, :AQ==:, "x\"y\\z";flag;r=-4"#,
        )
        .unwrap();
        assert_eq!(list.len(), 7);
        assert_eq!(list[3].r, Some(Bare::Integer(2)));
        assert_eq!(list[4].item, Some(Bare::Other));
        assert_eq!(list[4].r, Some(Bare::Integer(3)));
        assert_eq!(list[6].name(), Some(&br#"x\"y\\z"#[..]));
        assert_eq!(list[6].r, Some(Bare::Integer(-4)));
        // The last of a repeated parameter wins.
        assert_eq!(members("a;r=1;r=2").unwrap()[0].r, Some(Bare::Integer(2)));
        assert_eq!(members("  ").unwrap(), []);
        assert_eq!(members(" a ,\tb  ").unwrap().len(), 2);
    }

    #[test]
    fn invalid_lists_are_rejected_whole() {
        for bad in [
            "a,",
            ",a",
            "a b",
            "a;R=1",
            "a;r=",
            "a;r=1x",
            "\"unterminated",
            "\"bad\\escape\"",
            ":not base64!:",
            "1234567890123456",
            "1.2345",
            "?2",
            "(a",
            "(a)b",
            "%\"%C3\"",
            "a;=1",
            "\ta",
            "a\u{7f}",
            "-",
            "a, , b",
        ] {
            let mut called = false;
            assert_eq!(
                for_each_member(bad.as_bytes(), |_| called = true),
                None,
                "{bad:?}"
            );
            assert!(!called, "{bad:?}");
        }
    }
}
