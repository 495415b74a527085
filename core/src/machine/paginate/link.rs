//! The `Link` header (RFC 8288): parsing, and finding the `next` page.

use http::header::LINK;
use http::{HeaderMap, Uri};

/// One link of a `Link` header: a target URI reference and its parameters.
///
/// ```
/// use http::HeaderMap;
/// use keel_core::machine::paginate::parse_links;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("link", r#"</items?page=2>; rel="next last"; title="a, \"b\"""#.parse().unwrap());
/// let links = parse_links(&headers);
/// assert_eq!(links.len(), 1);
/// assert_eq!(links[0].target(), "/items?page=2");
/// assert_eq!(links[0].rels().collect::<Vec<_>>(), ["next", "last"]);
/// assert_eq!(links[0].param("title"), Some(r#"a, "b""#));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    target: String,
    params: Vec<(String, String)>,
}

impl Link {
    /// The target, as written between `<` and `>` (a URI reference, maybe relative).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The relation types of the first `rel` parameter (RFC 8288 §3.3: later ones are
    /// ignored), split on whitespace and lowercased.
    pub fn rels(&self) -> impl Iterator<Item = String> + '_ {
        self.param("rel")
            .unwrap_or("")
            .split_ascii_whitespace()
            .map(str::to_ascii_lowercase)
    }

    /// Whether one of the relation types is `rel`, compared case-insensitively.
    pub fn has_rel(&self, rel: &str) -> bool {
        self.param("rel")
            .unwrap_or("")
            .split_ascii_whitespace()
            .any(|r| r.eq_ignore_ascii_case(rel))
    }

    /// The value of the first parameter named `name` (case-insensitive), unquoted and
    /// unescaped; `Some("")` for a parameter without a value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All parameters in order, names lowercased, values unquoted and unescaped.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Parses every `Link` header of `headers`, in order, into its links.
///
/// Lenient by design: parts that don't parse (text outside `<…>`, a missing `>`, parameters
/// without a name) are skipped, and the rest is kept. Quoted strings may hold `,` and `;`,
/// and `\` escapes the next character. Header values that aren't UTF-8 are read lossily.
/// Never fails and never panics.
pub fn parse_links(headers: &HeaderMap) -> Vec<Link> {
    let mut links = Vec::new();
    for value in headers.get_all(LINK) {
        parse_into(&String::from_utf8_lossy(value.as_bytes()), &mut links);
    }
    links
}

/// The target of the first link whose `rel` includes `next`, resolved against `base` (the
/// URL of the request that got these headers), without its fragment.
///
/// `None` when there is no such link, or its target doesn't resolve to an `http` or `https`
/// URL with a host.
///
/// ```
/// use http::{HeaderMap, Uri};
/// use keel_core::machine::paginate::next_link;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("link", r#"<?page=3>; rel="next", <?page=1>; rel="prev""#.parse().unwrap());
/// let base: Uri = "https://api.example/items?page=2".parse().unwrap();
/// assert_eq!(next_link(&headers, &base).unwrap(), "https://api.example/items?page=3");
/// ```
pub fn next_link(headers: &HeaderMap, base: &Uri) -> Option<Uri> {
    parse_links(headers)
        .iter()
        .filter(|l| l.has_rel("next"))
        .find_map(|l| super::resolve(base, l.target()))
}

fn parse_into(s: &str, links: &mut Vec<Link>) {
    let b = s.as_bytes();
    let mut pos = 0;
    while pos < b.len() {
        pos = skip_while(b, pos, |c| c == b',' || is_ows(c));
        if pos >= b.len() {
            break;
        }
        if b[pos] != b'<' {
            pos = skip_garbage(b, pos, b",");
            continue;
        }
        let Some(gt) = b[pos + 1..].iter().position(|&c| c == b'>') else {
            break;
        };
        let target = s[pos + 1..pos + 1 + gt].trim().to_owned();
        pos += gt + 2;
        let mut params = Vec::new();
        loop {
            pos = skip_while(b, pos, is_ows);
            match b.get(pos) {
                None | Some(b',') => break,
                Some(b';') => {
                    pos += 1;
                    let (param, end) = parse_param(s, pos);
                    pos = end;
                    params.extend(param);
                }
                Some(_) => pos = skip_garbage(b, pos, b";,"),
            }
        }
        links.push(Link { target, params });
    }
}

/// Parses `name [= value]` from `pos` (just after a `;`); returns the parameter, if it has a
/// name, and where parsing stopped (at a `;`, a `,`, or the end).
fn parse_param(s: &str, pos: usize) -> (Option<(String, String)>, usize) {
    let b = s.as_bytes();
    let start = skip_while(b, pos, is_ows);
    let mut pos = skip_while(b, start, |c| !matches!(c, b'=' | b';' | b',') && !is_ows(c));
    let name = s[start..pos].to_ascii_lowercase();
    pos = skip_while(b, pos, is_ows);
    let mut value = String::new();
    if b.get(pos) == Some(&b'=') {
        pos = skip_while(b, pos + 1, is_ows);
        if b.get(pos) == Some(&b'"') {
            pos += 1;
            let mut run = pos;
            while pos < b.len() {
                match b[pos] {
                    b'"' => break,
                    b'\\' if pos + 1 < b.len() => {
                        value.push_str(&s[run..pos]);
                        // The escaped character may be several bytes long: copy a whole char.
                        let ch_len = s[pos + 1..].chars().next().map_or(1, char::len_utf8);
                        value.push_str(&s[pos + 1..pos + 1 + ch_len]);
                        pos += 1 + ch_len;
                        run = pos;
                        continue;
                    }
                    _ => {}
                }
                pos += 1;
            }
            value.push_str(&s[run..pos.min(b.len())]);
            pos = (pos + 1).min(b.len());
        } else {
            let vstart = pos;
            pos = skip_while(b, pos, |c| !matches!(c, b';' | b',') && !is_ows(c));
            value.push_str(&s[vstart..pos]);
        }
    }
    let param = (!name.is_empty()).then_some((name, value));
    (param, pos)
}

fn is_ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn skip_while(b: &[u8], mut pos: usize, f: impl Fn(u8) -> bool) -> usize {
    while pos < b.len() && f(b[pos]) {
        pos += 1;
    }
    pos
}

/// Skips to the next byte of `stops` outside a quoted string (or the end), always moving
/// forward at least one byte (the byte at `pos` is garbage, never a stop).
fn skip_garbage(b: &[u8], pos: usize, stops: &[u8]) -> usize {
    let mut quoted = b.get(pos) == Some(&b'"');
    let mut pos = pos + 1;
    while pos < b.len() {
        let c = b[pos];
        if quoted {
            match c {
                b'\\' => pos += 1,
                b'"' => quoted = false,
                _ => {}
            }
        } else if c == b'"' {
            quoted = true;
        } else if stops.contains(&c) {
            return pos;
        }
        pos += 1;
    }
    b.len()
}
