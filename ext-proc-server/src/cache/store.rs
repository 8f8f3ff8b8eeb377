//! Cache storage (being written).
