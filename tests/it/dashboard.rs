//! The dashboard is served from the binary with strict headers; the API
//! routes added for it answer as documented.

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::gateway::{Backend, TestGateway, ADMIN};

fn asset_paths(page: &str) -> Vec<String> {
    page.split('"')
        .filter(|part| part.starts_with("/dashboard/assets/"))
        .map(str::to_string)
        .collect()
}

async fn dashboard_is_served_with_strict_headers(backend: Backend) {
    let gw = TestGateway::start(backend, "http://127.0.0.1:9/v1").await;
    let page = client::send("GET", &gw.url("/dashboard"), "", None, &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    let csp = page.header("content-security-policy").unwrap().to_string();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let text = page.text();
    assert!(!text.contains("<script>") && !text.contains("<style"));
    let assets = asset_paths(&text);
    assert_eq!(assets.len(), 3, "{text}");
    for path in &assets {
        let asset = client::send("GET", &gw.url(path), "", None, &[]).await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(
            asset.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert!(asset.header("content-security-policy").is_some());
        let expected = if path.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else if path.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "image/svg+xml"
        };
        assert_eq!(asset.header("content-type"), Some(expected));
        assert!(!asset.body.is_empty());
    }
    // Clients that accept gzip get it; the bytes unpack to the same asset.
    for path in assets
        .iter()
        .chain(std::iter::once(&"/dashboard".to_string()))
    {
        let plain = client::send("GET", &gw.url(path), "", None, &[]).await;
        assert_eq!(plain.header("content-encoding"), None);
        let packed = client::send(
            "GET",
            &gw.url(path),
            "",
            None,
            &[("accept-encoding", "gzip, br")],
        )
        .await;
        assert_eq!(packed.status, 200);
        assert_eq!(packed.header("content-encoding"), Some("gzip"), "{path}");
        assert_eq!(packed.header("vary"), Some("Accept-Encoding"));
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&packed.body[..]),
            &mut unpacked,
        )
        .unwrap();
        assert_eq!(unpacked, plain.body.to_vec(), "{path}");
        assert!(packed.body.len() < plain.body.len());
    }
    // A stale or made-up hash is not served.
    let stale = client::send(
        "GET",
        &gw.url("/dashboard/assets/app.000000000000.js"),
        "",
        None,
        &[],
    )
    .await;
    assert_eq!(stale.status, 404);
    let post = client::send("POST", &gw.url("/dashboard"), "", None, &[]).await;
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );
    // Other methods on `/` stay the API's JSON 404.
    let post_root = client::send("POST", &gw.url("/"), "", None, &[]).await;
    assert_eq!(post_root.status, 404);
    assert!(post_root.json()["error"]["message"].is_string());
    let root = client::send("GET", &gw.url("/"), "", None, &[]).await;
    assert_eq!(
        (root.status, root.header("location")),
        (302, Some("/dashboard"))
    );
    gw.finish().await;
}
both_backends!(dashboard_is_served_with_strict_headers);

async fn model_list_for_the_settings_view(backend: Backend) {
    let gw = TestGateway::start(backend, "http://127.0.0.1:9/v1").await;
    let anonymous = client::send("GET", &gw.url("/api/models"), "", None, &[]).await;
    assert_eq!(anonymous.status, 401);
    let (_, key) = gw.user_with_credit("models@example.com", "0").await;
    for token in [key.as_str(), ADMIN] {
        let listed = client::send("GET", &gw.url("/api/models"), token, None, &[]).await;
        assert_eq!(listed.status, 200, "{}", listed.text());
        let listed = listed.json();
        let ids: Vec<&str> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert!(ids.contains(&"gpt-5.1"), "{listed}");
        assert!(listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["provider"].as_str().is_some_and(|p| !p.is_empty())));
    }
    gw.finish().await;
}
both_backends!(model_list_for_the_settings_view);
