//! What keel prints of a URL: never a password, never a signature.
//!
//! Every place keel shows a URL (`Debug` of requests, responses, errors and events, trace
//! fields, recorded exchanges) shows it through [`url`], which follows OpenTelemetry's rule
//! for `url.full`: credentials in the URL's authority print as `REDACTED:REDACTED@`, and the
//! values of the query parameters that carry signatures (`AWSAccessKeyId`, `Signature`, `sig`,
//! `X-Goog-Signature`, `X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`, `token`,
//! `access_token`, `api_key`, `apikey`, `key`) print as `REDACTED`.
//!
//! ```
//! let uri: http::Uri = "https://user:hunter2@api.example.com/v1/files?sig=abc&page=2".parse().unwrap();
//! assert_eq!(
//!     keel_core::redact::url(&uri).to_string(),
//!     "https://REDACTED:REDACTED@api.example.com/v1/files?sig=REDACTED&page=2",
//! );
//! ```

use std::fmt;

use http::Uri;

/// The query parameters whose values are secrets (compared ignoring ASCII case).
const SECRET_PARAMS: &[&str] = &[
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "X-Goog-Signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
];

/// `uri` as keel prints it: see the [module documentation](self).
pub fn url(uri: &Uri) -> RedactedUrl<'_> {
    RedactedUrl(uri)
}

/// A URL that prints without its secrets; made by [`url`].
#[derive(Clone, Copy)]
pub struct RedactedUrl<'a>(&'a Uri);

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.0;
        if let Some(scheme) = uri.scheme_str() {
            write!(f, "{scheme}://")?;
        }
        if let Some(authority) = uri.authority() {
            let authority = authority.as_str();
            match authority.rsplit_once('@') {
                Some((_, host)) => write!(f, "REDACTED:REDACTED@{host}")?,
                None => f.write_str(authority)?,
            }
        }
        f.write_str(uri.path())?;
        if let Some(query) = uri.query() {
            f.write_str("?")?;
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    f.write_str("&")?;
                }
                match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => write!(f, "{name}=REDACTED")?,
                    _ => f.write_str(pair)?,
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(s: &str) -> String {
        url(&s.parse().unwrap()).to_string()
    }

    #[test]
    fn plain_urls_print_as_they_are() {
        assert_eq!(
            show("http://127.0.0.1:8080/a/b?x=1&y"),
            "http://127.0.0.1:8080/a/b?x=1&y"
        );
        assert_eq!(show("/relative?q=1"), "/relative?q=1");
    }

    #[test]
    fn credentials_and_signatures_never_print() {
        let shown =
            show("https://alice:hunter2@h.example/p?Signature=s3cr3t&X-Amz-Credential=AKIA&ok=1");
        assert!(
            !shown.contains("hunter2") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("AKIA"),
            "{shown}"
        );
        assert!(shown.ends_with("&ok=1"), "{shown}");
        assert_eq!(
            show("https://token@h.example/"),
            "https://REDACTED:REDACTED@h.example/"
        );
    }
}
