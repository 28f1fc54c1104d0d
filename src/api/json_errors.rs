//! Every error the HTTP API answers has a JSON body, `{"error": "..."}`, as `docs/http.md`
//! (Errors) and `docs/openapi.yaml` promise — including the errors the handlers never see:
//! axum's own extractors and routers answer a body that is too large (`413`), a query or JSON
//! body that does not parse (`400`, `422`), a batch without a JSON content type (`415`) or a
//! method a route does not serve (`405`) in plain text or with no body at all.
//!
//! Promises: a response with a 4xx or 5xx status whose content type is not JSON leaves with the
//! same status and headers (`Allow` on a 405 included), its text moved into the `error` field
//! of a JSON body (the status's reason phrase when it had none). JSON errors, successes and
//! redirects pass untouched, streams included: only error bodies, which are short, are read.
//!
//! Why a layer rather than a rejection handler in every extractor: the API has a dozen
//! handlers and axum several rejection types; one layer keeps the promise for routes added
//! later, and the OpenAPI conformance run (`tests/api_conformance`) checks it holds. The direct
//! path of key requests, which skips the layers, calls [`as_json`] on its answers itself.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Response as HttpResponse};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

/// The most of a non-JSON error body kept as the message (axum's rejections are a line).
const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// The middleware: see the module's promises.
pub async fn json_errors(request: Request, next: Next) -> Response {
    as_json(next.run(request).await).await
}

/// `response`, its error body made JSON when it was not (see the module's promises).
pub async fn as_json(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await {
        Ok(bytes) if !bytes.trim_ascii().is_empty() => {
            String::from_utf8_lossy(bytes.trim_ascii()).into_owned()
        }
        _ => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    HttpResponse::from_parts(parts, Body::from(json!({ "error": text }).to_string()))
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::Router;
    use hyper::service::Service;
    use hyper_util::service::TowerToHyperService;

    /// The router behind the layer, called as the server calls it.
    async fn respond(router: Router, request: Request) -> Response {
        let service =
            TowerToHyperService::new(router.layer(axum::middleware::from_fn(json_errors)));
        service.call(request).await.expect("infallible")
    }

    async fn call(router: Router, request: Request) -> (StatusCode, HeaderValue, String) {
        let response = respond(router, request).await;
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE].clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn plain_text_and_empty_errors_become_json() {
        let router = Router::new()
            .route(
                "/text",
                get(|| async { (StatusCode::BAD_REQUEST, "bad limit") }),
            )
            .route("/ok", get(|| async { "fine" }));
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let (status, ct, body) = call(router.clone(), get("/text")).await;
        assert_eq!(
            (status, ct.to_str().unwrap()),
            (StatusCode::BAD_REQUEST, "application/json")
        );
        assert_eq!(body, r#"{"error":"bad limit"}"#);
        // axum's own 405: no body, an Allow header that must survive.
        let post = Request::post("/ok").body(Body::empty()).unwrap();
        let response = respond(router.clone(), post).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(response.headers().contains_key(header::ALLOW));
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        // Successes are left alone.
        let (status, ct, body) = call(router, get("/ok")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
        assert!(ct.to_str().unwrap().starts_with("text/plain"));
    }

    #[tokio::test]
    async fn json_errors_pass_untouched() {
        let router = Router::new().route(
            "/json",
            get(|| async {
                (
                    StatusCode::CONFLICT,
                    axum::Json(json!({"error": "x", "n": 1})),
                )
                    .into_response()
            }),
        );
        let (status, _, body) =
            call(router, Request::get("/json").body(Body::empty()).unwrap()).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::CONFLICT, r#"{"error":"x","n":1}"#)
        );
    }
}
