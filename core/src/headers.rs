//! Header names the filter and the sidecar both speak.

/// The request's id, set by the filter on the request and on the answer.
pub const REQUEST_ID: &str = "x-tollgate-request-id";
/// The rule that blocked a request, on the filter's (or sidecar's) refusal.
pub const BLOCKED_BY: &str = "x-tollgate-blocked-by";
