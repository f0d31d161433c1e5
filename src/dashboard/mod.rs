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
    /// The body gzipped once, for clients that accept it.
    gzip: Vec<u8>,
    hash: String,
}

struct Bundle {
    index: String,
    index_gzip: Vec<u8>,
    assets: Vec<Asset>,
}

/// Gzip at the best level: done once per process, not per request. An
/// empty result (compression failed) means "serve plain".
fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    if encoder.write_all(text.as_bytes()).is_err() {
        return Vec::new();
    }
    encoder.finish().unwrap_or_default()
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
            let gzip = gzip(&body);
            Asset {
                name,
                ext,
                content_type,
                body,
                gzip,
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
        index_gzip: gzip(&page),
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

/// An invitation (`/invite/{token}`) or join (`/join/{token}`) link opened
/// in a browser: the dashboard's page for it (the token travels in the
/// fragment, which browsers keep out of logs and referrers).
pub fn link_page(path: &str) -> Response<Body> {
    let (kind, token) = match path.trim_start_matches('/').split_once('/') {
        Some((kind, token)) if !token.is_empty() && !token.contains('/') => (kind, token),
        _ => return plain(StatusCode::NOT_FOUND, "Not found."),
    };
    let safe = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let location = HeaderValue::from_str(&format!("/dashboard#/{kind}/{token}"));
    let (true, Ok(location)) = (safe, location) else {
        return plain(StatusCode::NOT_FOUND, "Not found.");
    };
    let mut response = plain(StatusCode::FOUND, "");
    response
        .headers_mut()
        .insert(http::header::LOCATION, location);
    response
}

/// Serves the page or one of its assets (gzipped when the client accepts
/// it).
pub fn serve(method: &Method, path: &str, headers: &http::HeaderMap) -> Response<Body> {
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
    let gzip_ok = accepts_gzip(headers);
    let pick = |plain: &[u8], gzipped: &[u8]| {
        if gzip_ok && !gzipped.is_empty() {
            (gzipped.to_vec(), true)
        } else {
            (plain.to_vec(), false)
        }
    };
    if path == "/dashboard" || path == "/dashboard/" {
        let (body, gzipped) = pick(bundle.index.as_bytes(), &bundle.index_gzip);
        return respond(body, gzipped, "text/html; charset=utf-8", "no-cache", head);
    }
    if let Some(file) = path.strip_prefix("/dashboard/assets/") {
        for asset in &bundle.assets {
            if file == format!("{}.{}.{}", asset.name, asset.hash, asset.ext) {
                let (body, gzipped) = pick(asset.body.as_bytes(), &asset.gzip);
                return respond(
                    body,
                    gzipped,
                    asset.content_type,
                    "public, max-age=31536000, immutable",
                    head,
                );
            }
        }
    }
    plain(StatusCode::NOT_FOUND, "Not found.")
}

/// Whether `Accept-Encoding` lists gzip (and not with `q=0`).
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn respond(
    body: Vec<u8>,
    gzipped: bool,
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
    headers.insert(
        http::header::VARY,
        HeaderValue::from_static("Accept-Encoding"),
    );
    if gzipped {
        headers.insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
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
    fn gzipped_assets_unpack_to_the_originals() {
        use std::io::Read;
        let bundle = embedded();
        for asset in &bundle.assets {
            let mut unpacked = String::new();
            flate2::read::GzDecoder::new(asset.gzip.as_slice())
                .read_to_string(&mut unpacked)
                .unwrap();
            assert_eq!(unpacked, asset.body);
        }
        let js = bundle.assets.iter().find(|a| a.ext == "js").unwrap();
        assert!(js.gzip.len() * 2 < js.body.len());
    }

    #[test]
    fn gzip_is_chosen_from_accept_encoding() {
        let with = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_static(value),
            );
            accepts_gzip(&headers)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(!with("br"));
        assert!(!with("gzip;q=0"));
        assert!(!accepts_gzip(&http::HeaderMap::new()));
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
