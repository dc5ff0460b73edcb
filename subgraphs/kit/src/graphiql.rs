//! GraphiQL, the in-browser IDE, served at `GET /graphql` to browsers (a request that accepts
//! `text/html` and carries no `query`). The page loads GraphiQL from the unpkg CDN, pinned to
//! exact versions, and sends its requests to the same `/graphql`.

/// The page, posting to the path it was served from.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>GospeLib GraphQL</title>
  <link rel="stylesheet" href="https://unpkg.com/graphiql@3.8.3/graphiql.min.css">
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script crossorigin src="https://unpkg.com/react@18.3.1/umd/react.production.min.js"></script>
  <script crossorigin src="https://unpkg.com/react-dom@18.3.1/umd/react-dom.production.min.js"></script>
  <script crossorigin src="https://unpkg.com/graphiql@3.8.3/graphiql.min.js"></script>
  <script>
    const fetcher = GraphiQL.createFetcher({ url: window.location.pathname });
    ReactDOM.createRoot(document.getElementById('graphiql')).render(
      React.createElement(GraphiQL, { fetcher, defaultEditorToolbarTabs: 'variables' })
    );
  </script>
</body>
</html>
"#;

/// Whether a `GET` is a browser asking for the IDE rather than a GraphQL request.
pub fn wants_ide(accept: Option<&str>, has_query: bool) -> bool {
    !has_query
        && accept.is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with("text/html")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_browsers_without_a_query_get_the_ide() {
        let browser = "text/html,application/xhtml+xml,*/*;q=0.8";
        assert!(wants_ide(Some(browser), false));
        assert!(!wants_ide(Some(browser), true));
        assert!(!wants_ide(Some("application/json"), false));
        assert!(!wants_ide(None, false));
    }
}
