//! Lines, NDJSON and server-sent events read from responses, on virtual time.

use futures_util::StreamExt as _;

use super::*;
use crate::client::streams::EndReason;

fn sse(reply: Reply) -> Reply {
    reply.header("content-type", "text/event-stream; charset=utf-8")
}

fn body_cut() -> Error {
    Error::new(ErrorKind::Body).with_stage(Stage::Body)
}

#[test]
fn lines_are_split_across_chunks_and_the_last_one_is_kept() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .chunk("first\r")
            .chunk(&b"\nsecond line, caf\xC3"[..])
            .chunk(&b"\xA9\nthird"[..]),
    );
    let lines: Vec<_> = m.run(async {
        let resp = c.get("x").send().await.unwrap();
        resp.lines().collect::<Vec<_>>().await
    });
    let lines: Vec<String> = lines.into_iter().map(Result::unwrap).collect();
    assert_eq!(lines, ["first", "second line, café", "third"]);
}

#[test]
fn a_line_too_long_is_an_error_and_the_stream_goes_on() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .chunk("short\n")
            .chunk("x".repeat(100))
            .chunk("\nafter\n"),
    );
    let items = m.run(async {
        let resp = c.get("x").send().await.unwrap();
        resp.lines().max_line(10).collect::<Vec<_>>().await
    });
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0].as_deref().unwrap(), "short");
    let err = items[1].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LineTooLong { limit: 10 });
    assert_eq!(items[2].as_deref().unwrap(), "after");
}

#[derive(Debug, serde::Deserialize, PartialEq)]
struct Point {
    x: i32,
}

#[test]
fn ndjson_values_are_typed_and_a_bad_line_names_itself() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .chunk("{\"x\":1}\n\n{\"x\":")
            .chunk("2}\n{\"x\":\"three\"}\n{\"x\":4}"),
    );
    let items = m.run(async {
        let resp = c.get("x").send().await.unwrap();
        resp.ndjson::<Point>().collect::<Vec<_>>().await
    });
    assert_eq!(items.len(), 4, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap(), &Point { x: 1 });
    assert_eq!(items[1].as_ref().unwrap(), &Point { x: 2 });
    let err = items[2].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_eq!(err.json_path(), Some("x"));
    assert_eq!(items[3].as_ref().unwrap(), &Point { x: 4 });
}

#[test]
fn a_body_failing_mid_way_ends_the_lines_with_its_error() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .chunk("one\ntw")
            .fail_at(secs(1), body_cut()),
    );
    let items = m.run(async {
        let resp = c.get("x").send().await.unwrap();
        resp.lines().collect::<Vec<_>>().await
    });
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_deref().unwrap(), "one");
    assert_eq!(items[1].as_ref().unwrap_err().kind(), ErrorKind::Body);
}

#[test]
fn an_event_source_reconnects_with_the_last_event_id_after_the_server_retry() {
    let c = client();
    let m = mock(&c);
    m.push(sse(Reply::status(200)
        .chunk("retry: 500\n\nid: 1\ndata: a\n\ndata: half")
        .fail_at(secs(1), body_cut())));
    m.push(sse(Reply::status(200)
        .head_at(millis(1_500))
        .chunk("id: 2\ndata: b\n\n")));
    m.push(Reply::status(204));
    let mut events = c.get("feed").event_source();
    let got = m.run(async {
        let mut got = Vec::new();
        while let Some(event) = events.next().await {
            got.push(event.unwrap());
        }
        got
    });
    let data: Vec<_> = got.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["a", "b"], "the half event is dropped, nothing twice");
    assert_eq!(events.end_reason(), Some(EndReason::NoContent));
    assert_eq!(events.current_event_id(), "2");
    let log = m.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(values(&log[0].headers, "accept"), ["text/event-stream"]);
    assert!(log[0].headers.get("last-event-id").is_none());
    assert_eq!(values(&log[1].headers, "last-event-id"), ["1"]);
    assert_eq!(values(&log[2].headers, "last-event-id"), ["2"]);
    assert_eq!(
        log[1].at,
        millis(1_500),
        "the server's retry: 500 ms after the cut"
    );
}

#[test]
fn a_post_event_stream_sends_its_body_and_ends_with_the_body() {
    let c = client();
    let m = mock(&c);
    m.push(sse(Reply::status(200).chunk(
        "data: {\"token\":\"Hel\"}\n\ndata: {\"token\":\"lo\"}\n\n",
    )));
    let mut events = c
        .post("chat")
        .json(&serde_json::json!({"stream": true}))
        .event_source();
    #[derive(serde::Deserialize)]
    struct Token {
        token: String,
    }
    let text = m.run(async {
        let mut text = String::new();
        while let Some(event) = events.next().await {
            text.push_str(&event.unwrap().json::<Token>().unwrap().token);
        }
        text
    });
    assert_eq!(text, "Hello");
    assert_eq!(events.end_reason(), Some(EndReason::Ended));
    m.only(|r| {
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.body.as_deref(), Some(&b"{\"stream\":true}"[..]));
    });
}

#[test]
fn a_get_event_stream_reconnects_after_a_clean_end() {
    let c = client();
    let m = mock(&c);
    m.push(sse(Reply::status(200).chunk("id: 7\ndata: a\n\n")));
    m.push(Reply::status(204));
    let mut events = c.get("feed").event_source();
    let n = m.run(async { events.by_ref().count().await });
    assert_eq!(n, 1);
    assert_eq!(m.request_count(), 2);
    assert_eq!(values(&m.requests()[1].headers, "last-event-id"), ["7"]);
    assert_eq!(m.requests()[1].at, secs(1), "the source's first backoff");
}

#[test]
fn a_wrong_answer_ends_the_stream_with_a_clear_error() {
    let c = client();
    let m = mock(&c);
    m.push(Reply::status(200).header("content-type", "application/json"));
    let items = m.run(c.get("feed").event_source().collect::<Vec<_>>());
    assert_eq!(items.len(), 1);
    let err = items[0].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert!(
        format!("{:?}", err).contains("text/event-stream"),
        "{err:?}"
    );

    m.push(Reply::status(404));
    let items = m.run(c.get("feed").event_source().collect::<Vec<_>>());
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].as_ref().unwrap_err().kind(),
        ErrorKind::Status(StatusCode::NOT_FOUND)
    );
    assert_eq!(m.request_count(), 2, "a 404 is not reconnected to");
}

#[test]
fn reconnecting_stops_after_max_reconnects_in_a_row() {
    let c = client();
    let m = mock(&c);
    for _ in 0..4 {
        m.push(Reply::status(503));
    }
    let items = m.run(
        c.get("feed")
            .event_source()
            .max_reconnects(3)
            .collect::<Vec<_>>(),
    );
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].as_ref().unwrap_err().kind(),
        ErrorKind::Status(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(
        m.request_count(),
        4,
        "the first try and three reconnections"
    );
    // Backoff: 1 s, 2 s, 4 s.
    let at: Vec<_> = m.requests().iter().map(|r| r.at).collect();
    assert_eq!(at, [Duration::ZERO, secs(1), secs(3), secs(7)]);
}

#[test]
fn an_event_larger_than_the_limit_is_skipped_with_an_error() {
    let c = client();
    let m = mock(&c);
    m.push(sse(
        Reply::status(200).chunk(format!("data: {}\n\ndata: ok\n\n", "x".repeat(200)))
    ));
    let items = m.run(
        c.post("feed")
            .event_source()
            .max_event_size(64)
            .collect::<Vec<_>>(),
    );
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(
        items[0].as_ref().unwrap_err().kind(),
        ErrorKind::EventTooLarge { limit: 64 }
    );
    assert_eq!(items[1].as_ref().unwrap().data, "ok");
}
