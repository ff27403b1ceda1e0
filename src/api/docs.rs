//! `GET /docs`: the API reference, rendered by Swagger UI from `/openapi.json`. Its
//! script and stylesheet are vendored in the binary (`assets/`), never fetched from a CDN,
//! and the page runs under a CSP that allows this origin only (`headers::DOCS_CSP`).
//!
//! Vendored from the npm package swagger-ui-dist 5.36.0 (`npm pack swagger-ui-dist@5.36.0`,
//! tarball integrity sha512-Lt6/Kb0gXmLdi...DbLHiexC7lA9A==, shasum
//! d5805b115efd5406d8d3987096fcf6b31519f590), files unchanged: `swagger-ui-bundle.js` and
//! `swagger-ui.css`, renamed with their version; licence in `assets/swagger-ui-LICENSE`
//! (Apache-2.0). To update: pack the new version, copy the two files, and put their
//! sha384 below (the unit test checks them).

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};

use super::error::ApiError;

const VERSION: &str = "5.36.0";

/// A file of the page: its name under `/docs/assets/`, type, bytes and sha384 (`integrity=`).
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    integrity: &'static str,
}

const SCRIPT: Asset = Asset {
    name: "swagger-ui-bundle-5.36.0.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("assets/swagger-ui-bundle-5.36.0.js"),
    integrity: "sha384-fUpRgC19yPykTqzdrUbdAg8NTiu16NEKf9U12J+IJWCg8/1mEI8f2+PEIz60Wyd+",
};

const STYLESHEET: Asset = Asset {
    name: "swagger-ui-5.36.0.css",
    content_type: "text/css; charset=utf-8",
    body: include_str!("assets/swagger-ui-5.36.0.css"),
    integrity: "sha384-z/AtSaOHGn5MJ5auAHXUypohywlIWLBZo1jeGmhdpVIbCnFhxAH92cwdV41oyINc",
};

/// Ours: starts Swagger UI on the document's URL.
const STARTER: Asset = Asset {
    name: "docs.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("assets/docs.js"),
    integrity: "sha384-VaSdVmCB61bgVJfgzH5SAzcJkyfDGMWGc8eaNBTOmcStelAyZeXm1ccnSdl3R7mb",
};

const ASSETS: [&Asset; 3] = [&SCRIPT, &STYLESHEET, &STARTER];

/// `GET /docs`: the API reference.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "meta",
    responses((status = 200, description = "An HTML page rendering this document (Swagger UI, served by the gateway itself).", content_type = "text/html", body = String)),
)]
pub async fn page() -> Html<String> {
    let link = |a: &Asset| format!("/docs/assets/{}", a.name);
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>omnigate API reference</title>\
         <link rel=\"stylesheet\" href=\"{}\" integrity=\"{}\"></head>\
         <body><div id=\"swagger-ui\"></div>\
         <script src=\"{}\" integrity=\"{}\"></script>\
         <script src=\"{}\" integrity=\"{}\"></script></body></html>",
        link(&STYLESHEET),
        STYLESHEET.integrity,
        link(&SCRIPT),
        SCRIPT.integrity,
        link(&STARTER),
        STARTER.integrity,
    ))
}

/// `GET /docs/assets/{file}`: the reference page's script and stylesheet.
#[utoipa::path(
    get,
    path = "/docs/assets/{file}",
    tag = "meta",
    params(("file" = String, Path, description = "A file the `/docs` page links to.")),
    responses((status = 200, description = "The file (JavaScript or CSS).", body = String)),
)]
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let a = ASSETS
        .into_iter()
        .find(|a| a.name == file)
        .ok_or_else(|| ApiError::NotFound(format!("no asset {file}")))?;
    // Swagger UI's files carry their version in their name, so they never change; ours
    // may change with the gateway.
    let cache = if a.name.contains(VERSION) {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300"
    };
    Ok((
        [(CONTENT_TYPE, a.content_type), (CACHE_CONTROL, cache)],
        a.body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha2::{Digest, Sha384};

    use super::*;

    #[test]
    fn each_asset_is_the_file_its_integrity_names() {
        for a in ASSETS {
            let digest = Sha384::digest(a.body.as_bytes());
            let want = format!(
                "sha384-{}",
                base64::engine::general_purpose::STANDARD.encode(digest)
            );
            assert_eq!(a.integrity, want, "{}", a.name);
        }
    }
}
