//! The stylesheet and the small scripts, embedded in the binary and served with a content hash
//! in their URL so browsers may cache them forever.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const STYLE: &str = include_str!("../assets/style.css");
const APP_JS: &str = include_str!("../assets/app.js");
const VERIFY_JS: &str = include_str!("../assets/verify.js");

struct Asset {
    name: &'static str,
    body: &'static str,
    mime: &'static str,
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "style.css",
        body: STYLE,
        mime: "text/css; charset=utf-8",
    },
    Asset {
        name: "app.js",
        body: APP_JS,
        mime: "text/javascript; charset=utf-8",
    },
    Asset {
        name: "verify.js",
        body: VERIFY_JS,
        mime: "text/javascript; charset=utf-8",
    },
];

/// URLs of the assets, each with `?v=<first 12 hex of SHA-256>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetUrls {
    pub style: String,
    pub app: String,
    pub verify: String,
}

fn version(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..6])
}

pub fn urls() -> &'static AssetUrls {
    static URLS: OnceLock<AssetUrls> = OnceLock::new();
    URLS.get_or_init(|| AssetUrls {
        style: format!("/assets/style.css?v={}", version(STYLE)),
        app: format!("/assets/app.js?v={}", version(APP_JS)),
        verify: format!("/assets/verify.js?v={}", version(VERIFY_JS)),
    })
}

/// `GET /assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => {
            let mut r = a.body.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            r
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
