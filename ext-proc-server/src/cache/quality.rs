//! Cache quality evaluation (being written).
