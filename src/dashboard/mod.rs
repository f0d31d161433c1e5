//! The team dashboard: static files embedded in the binary, served under
//! `/dashboard` with a strict Content-Security-Policy. The page is plain
//! HTML, CSS and one ES module; it talks only to `/api` on the same origin.
//!
//! Assets are addressed by a content hash (`/dashboard/assets/app.<hash>.js`)
//! and cached for a year; the page itself is revalidated on every load.
//! Debug builds read the files from `TOLLGATE_DASHBOARD_DIR` when it is set,
//! so the page can be edited without rebuilding.

use std::borrow::Cow;
use std::sync::OnceLock;

use http::{HeaderValue, Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::http_body::Body;

const INDEX: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");
const ICON: &str = include_str!("static/icon.svg");

/// No inline script or style, nothing from another origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    ext: &'static str,
    content_type: &'static str,
    body: Cow<'static, str>,
    hash: String,
}

struct Bundle {
    index: String,
    assets: Vec<Asset>,
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn build(
    index: &str,
    sources: [(&'static str, &'static str, &'static str, Cow<'static, str>); 3],
) -> Bundle {
    let assets: Vec<Asset> = sources
        .into_iter()
        .map(|(name, ext, content_type, body)| {
            let hash = short_hash(&body);
            Asset {
                name,
                ext,
                content_type,
                body,
                hash,
            }
        })
        .collect();
    let mut page = index.to_string();
    for asset in &assets {
        page = page.replace(
            &format!("{{{{{}.{}}}}}", asset.name, asset.ext),
            &format!(
                "/dashboard/assets/{}.{}.{}",
                asset.name, asset.hash, asset.ext
            ),
        );
    }
    Bundle {
        index: page,
        assets,
    }
}

fn embedded() -> &'static Bundle {
    static BUNDLE: OnceLock<Bundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        build(
            INDEX,
            [
                (
                    "app",
                    "js",
                    "text/javascript; charset=utf-8",
                    Cow::Borrowed(APP_JS),
                ),
                (
                    "app",
                    "css",
                    "text/css; charset=utf-8",
                    Cow::Borrowed(APP_CSS),
                ),
                ("icon", "svg", "image/svg+xml", Cow::Borrowed(ICON)),
            ],
        )
    })
}

/// Debug builds only: the files as they are on disk now.
fn from_disk() -> Option<Bundle> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let dir = std::env::var_os("TOLLGATE_DASHBOARD_DIR")?;
    let dir = std::path::PathBuf::from(dir);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    Some(build(
        &read("index.html")?,
        [
            (
                "app",
                "js",
                "text/javascript; charset=utf-8",
                Cow::Owned(read("app.js")?),
            ),
            (
                "app",
                "css",
                "text/css; charset=utf-8",
                Cow::Owned(read("app.css")?),
            ),
            (
                "icon",
                "svg",
                "image/svg+xml",
                Cow::Owned(read("icon.svg")?),
            ),
        ],
    ))
}

/// Whether `path` belongs to the dashboard (`/` only for GET and HEAD: it
/// redirects here).
pub fn owns(method: &Method, path: &str) -> bool {
    (path == "/" && (method == Method::GET || method == Method::HEAD))
        || path == "/dashboard"
        || path.starts_with("/dashboard/")
}

/// Serves the page or one of its assets.
pub fn serve(method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if path == "/" {
        let mut response = plain(StatusCode::FOUND, "");
        response.headers_mut().insert(
            http::header::LOCATION,
            HeaderValue::from_static("/dashboard"),
        );
        return response;
    }
    let disk = from_disk();
    let bundle = disk.as_ref().unwrap_or_else(|| embedded());
    let head = method == Method::HEAD;
    if path == "/dashboard" || path == "/dashboard/" {
        return respond(
            bundle.index.clone().into_bytes(),
            "text/html; charset=utf-8",
            "no-cache",
            head,
        );
    }
    if let Some(file) = path.strip_prefix("/dashboard/assets/") {
        for asset in &bundle.assets {
            if file == format!("{}.{}.{}", asset.name, asset.hash, asset.ext) {
                return respond(
                    asset.body.as_bytes().to_vec(),
                    asset.content_type,
                    "public, max-age=31536000, immutable",
                    head,
                );
            }
        }
    }
    plain(StatusCode::NOT_FOUND, "Not found.")
}

fn respond(
    body: Vec<u8>,
    content_type: &'static str,
    cache: &'static str,
    head: bool,
) -> Response<Body> {
    let length = body.len();
    let mut response = Response::new(if head {
        Body::empty()
    } else {
        Body::full(body)
    });
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    secure(headers);
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(headers);
    response
}

fn secure(headers: &mut http::HeaderMap) {
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_assets_by_hash() {
        let bundle = embedded();
        for asset in &bundle.assets {
            let path = format!(
                "/dashboard/assets/{}.{}.{}",
                asset.name, asset.hash, asset.ext
            );
            assert!(bundle.index.contains(&path), "index lacks {path}");
        }
        assert!(!bundle.index.contains("{{"), "an asset placeholder is left");
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let index = &embedded().index;
        assert!(!index.contains("<script>"));
        assert!(!index.contains("<style"));
        assert!(!index.contains(" style="));
        assert!(!index.contains("onclick"));
    }
}
