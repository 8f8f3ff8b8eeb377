//! Header names the filter and the sidecar both speak.

/// The request's id, set by the filter on the request and on the answer.
pub const REQUEST_ID: &str = "x-tollgate-request-id";
/// The provider (or alias route) the sidecar picked; Envoy's route table
/// reads it. Only the gateway sets it: a client's is removed before anything
/// reads it (Envoy's first filter, the wasm filter and the sidecar each
/// remove it).
pub const PROVIDER: &str = "x-tollgate-provider";
/// The rule that blocked a request, on the filter's (or sidecar's) refusal.
pub const BLOCKED_BY: &str = "x-tollgate-blocked-by";

/// Filter state the filter sets for the sidecar (Envoy keeps it under
/// `wasm.<name>`; the ext_proc filter sends it as an attribute, which a
/// client cannot forge): the filter inspects this request (set with its
/// request headers).
pub const INSPECTING_STATE: &str = "io.tollgate.inspecting";
/// The filter's inspection report of the request (JSON `InspectionReport`,
/// set when there is something to report), sent with the response headers.
pub const INSPECTION_STATE: &str = "io.tollgate.inspection";
