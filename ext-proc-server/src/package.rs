//! OCI packaging of the filter (being written).
