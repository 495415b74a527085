use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_executor::block_on;
use http_body_util::BodyExt as _;
use proptest::prelude::*;

use super::*;

/// A file in the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, contents: &[u8]) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("keel-multipart-{}-{n}-{tag}", std::process::id()));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(contents))
            .expect("a temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn collect(body: Body) -> Result<Bytes, BoxError> {
    block_on(body.collect()).map(|c| c.to_bytes())
}

/// A part as a parser sees it: headers (lowercase names) and content.
#[derive(Debug)]
struct Parsed {
    headers: Vec<(String, String)>,
    data: Vec<u8>,
}

impl Parsed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A `Content-Disposition` parameter's raw (still escaped) value, read as RFC 7578 and
    /// the HTML standard write it: `; key="…"`, a value ending at the next quote.
    fn disposition(&self, key: &str) -> Option<String> {
        let value = self.header("content-disposition")?;
        let mut rest = value.strip_prefix("form-data")?;
        while let Some(after) = rest.strip_prefix("; ") {
            let (k, v) = after.split_once("=\"")?;
            let end = v.find('"')?;
            if k == key {
                return Some(v[..end].to_owned());
            }
            rest = &v[end + 1..];
        }
        None
    }
}

/// A strict `multipart/form-data` parser: the body must be exactly delimiter, part,
/// delimiter, …, close delimiter.
fn parse(body: &[u8], boundary: &str) -> Result<Vec<Parsed>, String> {
    let delimiter = format!("\r\n--{boundary}");
    // The first delimiter has no CRLF before it (no preamble).
    let mut data = b"\r\n".to_vec();
    data.extend_from_slice(body);
    let mut at = data
        .strip_prefix(delimiter.as_bytes())
        .map(|_| delimiter.len())
        .ok_or("no opening delimiter")?;
    let mut parts = Vec::new();
    loop {
        let rest = &data[at..];
        if rest == b"--\r\n" {
            return Ok(parts);
        }
        let rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("no CRLF after a delimiter")?;
        let end = find(rest, delimiter.as_bytes()).ok_or("no delimiter after a part")?;
        let part = &rest[..end];
        let blank = find(part, b"\r\n\r\n");
        let (head, content) = match blank {
            Some(i) => (&part[..i], &part[i + 4..]),
            None => return Err("a part without a blank line".into()),
        };
        let head = std::str::from_utf8(head).map_err(|e| e.to_string())?;
        let headers = head
            .split("\r\n")
            .map(|line| {
                let (n, v) = line.split_once(": ").ok_or(format!("bad line {line:?}"))?;
                Ok((n.to_ascii_lowercase(), v.to_owned()))
            })
            .collect::<Result<_, String>>()?;
        parts.push(Parsed {
            headers,
            data: content.to_vec(),
        });
        at += 2 + end + delimiter.len();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn unescape(raw: &str) -> String {
    raw.replace("%22", "\"")
        .replace("%0D", "\r")
        .replace("%0A", "\n")
}

#[test]
fn a_small_form_is_encoded_byte_for_byte() {
    let form = Form::with_boundary("B0undary")
        .unwrap()
        .text("a", "1")
        .part(
            "doc",
            Part::bytes(&b"{}"[..])
                .file_name("d.json")
                .content_type("application/json")
                .header("x-sum", "7"),
        )
        .text("empty", "");
    let length = form.content_length();
    let bytes = block_on(form.to_bytes()).unwrap();
    let expected: &[u8] = b"--B0undary\r\n\
        Content-Disposition: form-data; name=\"a\"\r\n\
        \r\n\
        1\r\n\
        --B0undary\r\n\
        Content-Disposition: form-data; name=\"doc\"; filename=\"d.json\"\r\n\
        Content-Type: application/json\r\n\
        x-sum: 7\r\n\
        \r\n\
        {}\r\n\
        --B0undary\r\n\
        Content-Disposition: form-data; name=\"empty\"\r\n\
        \r\n\
        \r\n\
        --B0undary--\r\n";
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        std::str::from_utf8(expected).unwrap()
    );
    assert_eq!(length, Some(expected.len() as u64));
}

#[test]
fn an_empty_form_is_the_close_delimiter() {
    let form = Form::with_boundary("b").unwrap();
    assert!(form.is_empty());
    assert_eq!(form.content_length(), Some(9));
    assert_eq!(&block_on(form.to_bytes()).unwrap()[..], b"\r\n--b--\r\n");
}

#[test]
fn quotes_and_line_breaks_in_names_are_percent_encoded() {
    let form = Form::with_boundary("b").unwrap().part(
        "a\"b\r\nc: d",
        Part::text("v").file_name("x\".txt\"\n; name=\"evil\""),
    );
    let bytes = block_on(form.to_bytes()).unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.contains(
        "Content-Disposition: form-data; name=\"a%22b%0D%0Ac: d\"; \
         filename=\"x%22.txt%22%0A; name=%22evil%22\"\r\n\r\nv"
    ));
    let parts = parse(&bytes, "b").unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(
        unescape(&parts[0].disposition("name").unwrap()),
        "a\"b\r\nc: d"
    );
}

#[test]
fn names_keep_their_utf8() {
    let form = Form::with_boundary("b")
        .unwrap()
        .part("prénom", Part::text("Zoë").file_name("naïve 名前.txt"));
    let bytes = block_on(form.to_bytes()).unwrap();
    let parts = parse(&bytes, "b").unwrap();
    assert_eq!(parts[0].disposition("name").unwrap(), "prénom");
    assert_eq!(parts[0].disposition("filename").unwrap(), "naïve 名前.txt");
    assert_eq!(parts[0].data, "Zoë".as_bytes());
}

#[test]
fn random_boundaries_follow_rfc_2046_and_differ() {
    let a = Form::new();
    let b = Form::new();
    assert_ne!(a.boundary(), b.boundary());
    for form in [&a, &b] {
        let boundary = form.boundary();
        assert_eq!(boundary.len(), 37, "{boundary}");
        assert!(boundary.starts_with("keel-"));
        assert!(boundary[5..].bytes().all(|c| c.is_ascii_hexdigit()));
        check_boundary(boundary).unwrap();
        assert_eq!(
            form.content_type(),
            format!("multipart/form-data; boundary={boundary}")
        );
    }
}

#[test]
fn chosen_boundaries_are_checked() {
    for bad in [
        "",
        "ends with a space ",
        "quote\"",
        "semi;colon",
        &"x".repeat(71),
    ] {
        let err = Form::with_boundary(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{bad:?}");
    }
    let spaced = Form::with_boundary("with space:=?").unwrap();
    assert_eq!(
        spaced.content_type(),
        "multipart/form-data; boundary=\"with space:=?\""
    );
    assert!(Form::with_boundary(&"x".repeat(70)).is_ok());
}

#[test]
fn a_random_boundary_found_in_a_part_is_drawn_again() {
    let form = Form::new();
    let first = form.boundary().to_owned();
    let form = form.text("trap", format!("x\r\n--{first}--\r\n"));
    let body = form.into_request_body().unwrap();
    let FormBody::Rebuild(make) = body.body else {
        panic!("a text form is rebuildable")
    };
    let bytes = collect(make()).unwrap();
    let content_type = body.content_type.to_str().unwrap();
    let boundary = content_type.rsplit_once('=').unwrap().1;
    assert_ne!(boundary, first);
    let parts = parse(&bytes, boundary).unwrap();
    assert_eq!(parts[0].data, format!("x\r\n--{first}--\r\n").as_bytes());
}

#[test]
fn a_chosen_boundary_found_in_a_part_is_refused() {
    let form = Form::with_boundary("b").unwrap().text("t", "a--b");
    let err = form.into_body().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(std::error::Error::source(&err)
        .unwrap()
        .to_string()
        .contains("\"t\""));
}

#[test]
fn mistakes_in_parts_are_typed_errors() {
    let cases = [
        Part::text("x").content_type("not a type"),
        Part::text("x").header("content-disposition", "attachment"),
        Part::text("x").header("bad name", "v"),
        Part::text("x").header("x-a", "line\nbreak"),
    ];
    for part in cases {
        let err = Form::new().part("p", part).into_body().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    }
    // A Content-Type header is the content type.
    let form = Form::with_boundary("b")
        .unwrap()
        .part("p", Part::text("x").header("content-type", "text/csv"));
    let parts = parse(&block_on(form.to_bytes()).unwrap(), "b").unwrap();
    assert_eq!(parts[0].header("content-type"), Some("text/csv"));
}

#[test]
fn a_missing_file_or_a_directory_is_an_invalid_request() {
    let missing = std::env::temp_dir().join("keel-multipart-no-such-file");
    let err = block_on(Part::file(&missing)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    let err = Part::blocking_file(std::env::temp_dir()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
}

#[test]
fn file_parts_are_streamed_and_rebuilt() {
    let contents: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let file = TempFile::new("data.csv", &contents);
    let part = block_on(Part::file(&file.0)).unwrap();
    assert_eq!(part.length(), Some(contents.len() as u64));
    let form = Form::with_boundary("b")
        .unwrap()
        .text("t", "1")
        .part("f", part);
    assert!(form.is_rebuildable());
    let length = form.content_length().unwrap();
    let encoded = form.into_request_body().unwrap();
    assert_eq!(encoded.length, Some(length));
    let FormBody::Rebuild(make) = encoded.body else {
        panic!("a file form is rebuildable")
    };
    for _ in 0..2 {
        let body = make();
        assert_eq!(body.content_length(), Some(length));
        let bytes = collect(body).unwrap();
        assert_eq!(bytes.len() as u64, length);
        let parts = parse(&bytes, "b").unwrap();
        assert_eq!(parts[1].data, contents);
        let name = file.0.file_name().unwrap().to_str().unwrap();
        assert_eq!(parts[1].disposition("filename").unwrap(), name);
        assert_eq!(parts[1].header("content-type"), Some("text/csv"));
    }
}

#[test]
fn a_file_that_changed_size_fails_the_body() {
    let file = TempFile::new("grows", b"12345");
    let part = Part::blocking_file(&file.0).unwrap();
    std::fs::write(&file.0, b"1234567").unwrap();
    let err = collect(Form::new().part("f", part).into_body().unwrap()).unwrap_err();
    assert!(err.to_string().contains("more than the 5 bytes"), "{err}");

    let part = Part::blocking_file(&file.0).unwrap();
    std::fs::write(&file.0, b"12").unwrap();
    let err = collect(Form::new().part("f", part).into_body().unwrap()).unwrap_err();
    assert!(err.to_string().contains("ended after 2 of the 7"), "{err}");

    let part = Part::blocking_file(&file.0).unwrap();
    std::fs::remove_file(&file.0).unwrap();
    let err = collect(Form::new().part("f", part).into_body().unwrap()).unwrap_err();
    assert!(err.to_string().contains("\"f\""), "{err}");
}

/// An `AsyncRead` over a buffer, returning at most `step` bytes a read.
struct Slow {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Slow {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.step).min(self.data.len() - self.at);
        let at = self.at;
        buf[..n].copy_from_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(n))
    }
}

fn slow(data: &[u8]) -> Slow {
    Slow {
        data: data.to_vec(),
        at: 0,
        step: 3,
    }
}

#[test]
fn reader_parts_are_sent_once_sized_or_chunked() {
    let form = Form::with_boundary("b")
        .unwrap()
        .part("r", Part::reader(slow(b"streamed")));
    assert!(!form.is_rebuildable());
    assert_eq!(form.content_length(), None);
    let encoded = form.into_request_body().unwrap();
    assert_eq!(encoded.length, None);
    let FormBody::Once(body) = encoded.body else {
        panic!("a reader form is sent once")
    };
    assert_eq!(body.content_length(), None);
    let parts = parse(&collect(body).unwrap(), "b").unwrap();
    assert_eq!(parts[0].data, b"streamed");

    let form = Form::with_boundary("b")
        .unwrap()
        .part("r", Part::reader_with_length(slow(b"sized"), 5));
    let length = form.content_length().unwrap();
    let body = form.into_body().unwrap();
    assert_eq!(body.content_length(), Some(length));
    assert_eq!(collect(body).unwrap().len() as u64, length);
}

#[test]
fn a_reader_that_lies_about_its_length_fails_the_body() {
    for (data, said) in [(&b"abc"[..], 4), (&b"abcde"[..], 4)] {
        let form = Form::new().part("r", Part::reader_with_length(slow(data), said));
        let err = collect(form.into_body().unwrap()).unwrap_err();
        assert!(err.to_string().contains("\"r\""), "{err}");
    }
}

/// Posts `form` (idempotent) to a mock that answers 503 once, then 201, with retries on;
/// returns the final status and the number of attempts.
fn post_through_a_503(form: Form) -> (u16, usize) {
    use crate::mock::{Answer, Matcher, MockTransport, Rule};
    use crate::{Client, Jitter, RetryPolicy};

    let mock = MockTransport::new();
    let framed = Matcher::path("/upload").and(Matcher::header_present("content-type"));
    let first = mock.mount(
        Rule::when(framed.clone())
            .respond(Answer::status(503))
            .up_to_n_times(1),
    );
    let second = mock.mount(Rule::when(framed).respond(Answer::status(201)));
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let client = Client::<MockTransport>::builder()
        .base_url("https://api.example.com/")
        .retry_policy(policy)
        .build_with(mock.clone())
        .unwrap();
    let status = mock
        .run(async {
            let response = client
                .post("upload")
                .idempotent(true)
                .multipart(form)
                .send()
                .await?;
            Ok::<_, Error>(response.status())
        })
        .unwrap();
    (status.as_u16(), first.hits() + second.hits())
}

#[test]
fn a_rebuildable_form_is_sent_again_on_a_retry_and_a_reader_form_is_not() {
    let file = TempFile::new("retry.bin", b"file contents");
    let rebuildable = Form::new()
        .text("t", "x")
        .part("f", Part::blocking_file(&file.0).unwrap());
    assert_eq!(post_through_a_503(rebuildable), (201, 2));
    let once = Form::new().part("r", Part::reader(slow(b"once")));
    assert_eq!(post_through_a_503(once), (503, 1));
}

#[test]
fn the_request_says_the_form_s_type_and_length() {
    use crate::mock::MockTransport;
    use crate::Client;

    let client = Client::<MockTransport>::builder()
        .base_url("https://api.example.com/")
        .build_with(MockTransport::new())
        .unwrap();
    let form = Form::with_boundary("b").unwrap().text("a", "1");
    let length = form.content_length().unwrap();
    let request = client
        .post("upload")
        .header("content-length", "999")
        .multipart(form)
        .build()
        .unwrap();
    assert_eq!(
        request.headers()["content-type"],
        "multipart/form-data; boundary=b"
    );
    assert_eq!(
        request.headers()["content-length"],
        length.to_string().as_str()
    );
    assert!(
        request.try_clone().is_some(),
        "a rebuildable form can be copied"
    );

    let form = Form::new().part("r", Part::reader(slow(b"x")));
    let request = client
        .post("upload")
        .header("content-length", "999")
        .multipart(form)
        .build()
        .unwrap();
    assert!(!request.headers().contains_key("content-length"));
    assert!(request.try_clone().is_none(), "a reader form is one-shot");

    let err = client
        .post("upload")
        .multipart(Form::new().part("p", Part::text("x").content_type("nope")))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
}

#[test]
fn contains_finds_needles_anywhere() {
    assert!(contains(b"abc", b""));
    assert!(contains(b"abc", b"abc"));
    assert!(contains(b"xxabcab", b"ab"));
    assert!(contains(b"aab", b"ab"));
    assert!(!contains(b"ab", b"abc"));
    assert!(!contains(b"acb", b"ab"));
}

#[test]
fn content_types_are_guessed_from_a_small_table() {
    assert_eq!(guess_content_type(Path::new("a/b.PNG")), "image/png");
    assert_eq!(guess_content_type(Path::new("r.pdf")), "application/pdf");
    assert_eq!(
        guess_content_type(Path::new("archive.tar.gz")),
        "application/gzip"
    );
    assert_eq!(
        guess_content_type(Path::new("noext")),
        "application/octet-stream"
    );
}

proptest! {
    /// Whatever the names and values, a parser gets back as many parts as were given, with
    /// their content byte for byte and their names intact (a name with no `%` reads back
    /// exactly; any name's raw form holds no quote or line break), and the length said up
    /// front is the length sent.
    #[test]
    fn any_fields_round_trip(
        fields in proptest::collection::vec(
            (any::<String>(), proptest::option::of(any::<String>()),
             proptest::collection::vec(any::<u8>(), 0..300)),
            0..6,
        ),
    ) {
        let mut form = Form::new();
        for (name, file_name, value) in &fields {
            let mut part = Part::bytes(value.clone());
            if let Some(file_name) = file_name {
                part = part.file_name(file_name.clone());
            }
            form = form.part(name.clone(), part);
        }
        let length = form.content_length();
        let encoded = form.into_request_body().unwrap();
        let content_type = encoded.content_type.to_str().unwrap().to_owned();
        let boundary = content_type.rsplit_once("boundary=").unwrap().1.to_owned();
        let FormBody::Rebuild(make) = encoded.body else { panic!("rebuildable") };
        let bytes = collect(make()).unwrap();
        prop_assert_eq!(length, Some(bytes.len() as u64));
        let parts = if fields.is_empty() {
            let empty = format!("\r\n--{boundary}--\r\n");
            prop_assert_eq!(&bytes[..], empty.as_bytes());
            Vec::new()
        } else {
            parse(&bytes, &boundary).map_err(TestCaseError::fail)?
        };
        prop_assert_eq!(parts.len(), fields.len());
        for ((name, file_name, value), part) in fields.iter().zip(&parts) {
            prop_assert_eq!(&part.data, value);
            let raw = part.disposition("name").unwrap();
            prop_assert!(!raw.contains(['"', '\r', '\n']));
            if !name.contains('%') {
                prop_assert_eq!(&unescape(&raw), name);
            }
            match file_name {
                None => prop_assert!(part.disposition("filename").is_none()),
                Some(file_name) if !file_name.contains('%') => {
                    prop_assert_eq!(&unescape(&part.disposition("filename").unwrap()), file_name);
                }
                Some(_) => {}
            }
        }
    }
}
