//! What every request leaves behind: an `x-request-id` (the client's, or a new UUID) echoed in
//! the response and carried by the request's tracing span, and Prometheus metrics by route and
//! status. The `/metrics` page itself is served on its own address (see [`metrics_router`]), so
//! it is never exposed where the API is.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Latency buckets (seconds) for every `*_seconds` histogram: 1 ms to 60 s.
const BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The process-wide Prometheus recorder, installed on first use (one per process: tests start
/// several services in one process, and they share it).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    let upkeep = handle.clone();
                    std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(Duration::from_secs(5));
                                upkeep.run_upkeep();
                            }
                        })
                        .ok()?;
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not install the metrics recorder: no metrics");
                    None
                }
            }
        })
        .as_ref()
}

/// `GET /metrics` in the Prometheus text format, for the metrics listener.
pub fn metrics_router() -> Router {
    Router::new().route(
        "/metrics",
        get(|| async {
            let body = prometheus().map(PrometheusHandle::render).unwrap_or_default();
            ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], body)
                .into_response()
        }),
    )
}

/// Adds the request-id and tracing layers: the client's id is kept (a new UUID otherwise) before
/// the span opens, and copied onto the response.
pub fn with_request_ids(app: Router) -> Router {
    app.layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or_default();
            let route = request.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), route, request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Drops a client `x-request-id` that is too long or not visible ASCII, so logs stay clean.
pub async fn sanitize_request_id(mut request: Request, next: Next) -> Response {
    let bad = request
        .headers()
        .get(&REQUEST_ID)
        .is_some_and(|v| v.len() > 128 || !v.as_bytes().iter().all(|b| b.is_ascii_graphic()));
    if bad {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

/// Counts every request by method, route template and status, with its latency.
pub async fn track_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Label values stay a small set: unusual methods are one label, not one series each.
    let method: &'static str = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("dynamcp_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("dynamcp_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
