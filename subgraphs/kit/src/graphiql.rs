//! GraphiQL, the in-browser IDE, served at `GET /graphql` to browsers (a request that accepts
//! `text/html` and carries no `query`). The page loads GraphiQL from the unpkg CDN, pinned to
//! exact versions, each file checked by the browser against its Subresource Integrity hash (a
//! CDN serving other bytes gets no script run on the API's origin), and sends its requests to
//! the same `/graphql`. A hash is the file's from the package's npm tarball, which unpkg serves
//! unchanged: `npm pack graphiql@3.8.3`, unpack, then
//! `echo sha384-$(openssl dgst -sha384 -binary package/graphiql.min.js | base64 -w0)`.

use axum::http::{HeaderMap, header};

/// The page, posting to the path it was served from.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>GospeLib GraphQL</title>
  <link rel="stylesheet" href="https://unpkg.com/graphiql@3.8.3/graphiql.min.css"
    integrity="sha384-Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM" crossorigin="anonymous">
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script src="https://unpkg.com/react@18.3.1/umd/react.production.min.js"
    integrity="sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z" crossorigin="anonymous"></script>
  <script src="https://unpkg.com/react-dom@18.3.1/umd/react-dom.production.min.js"
    integrity="sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1" crossorigin="anonymous"></script>
  <script src="https://unpkg.com/graphiql@3.8.3/graphiql.min.js"
    integrity="sha384-HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie" crossorigin="anonymous"></script>
  <script>
    const fetcher = GraphiQL.createFetcher({ url: window.location.pathname });
    ReactDOM.createRoot(document.getElementById('graphiql')).render(
      React.createElement(GraphiQL, { fetcher, defaultEditorToolbarTabs: 'variables' })
    );
  </script>
</body>
</html>
"#;

/// Whether a `GET` is a browser asking for the IDE rather than a GraphQL request: no query,
/// and `text/html` acceptable on any of its `accept` lines (any case, a quality above zero).
pub fn wants_ide(headers: &HeaderMap, has_query: bool) -> bool {
    !has_query
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|line| line.to_str().ok())
            .flat_map(|line| line.split(','))
            .any(|entry| {
                let media_type = entry.split(';').next().unwrap_or("").trim();
                media_type.eq_ignore_ascii_case("text/html")
                    && crate::graphql_http::quality(entry) > 0.0
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(header::ACCEPT, line.parse().unwrap());
        }
        headers
    }

    /// Every file the page loads from elsewhere carries an integrity hash (and is fetched
    /// with CORS, without which the browser cannot check it).
    #[test]
    fn every_file_from_the_cdn_is_checked_by_its_hash() {
        let tags: Vec<&str> = PAGE
            .split('<')
            .filter(|tag| tag.contains("https://"))
            .collect();
        assert_eq!(tags.len(), 4, "{tags:?}");
        for tag in tags {
            assert!(tag.contains("integrity=\"sha384-"), "{tag}");
            assert!(tag.contains("crossorigin=\"anonymous\""), "{tag}");
        }
    }

    #[test]
    fn only_browsers_without_a_query_get_the_ide() {
        let browser = "text/html,application/xhtml+xml,*/*;q=0.8";
        assert!(wants_ide(&accept(&[browser]), false));
        assert!(!wants_ide(&accept(&[browser]), true));
        assert!(!wants_ide(&accept(&["application/json"]), false));
        assert!(!wants_ide(&accept(&[]), false));
        // Any line, any case; a quality of zero is "not acceptable".
        assert!(wants_ide(
            &accept(&["application/json", "Text/HTML"]),
            false
        ));
        assert!(!wants_ide(
            &accept(&["text/html;q=0, application/json"]),
            false
        ));
        assert!(wants_ide(&accept(&["text/html; q=0.5"]), false));
    }
}
