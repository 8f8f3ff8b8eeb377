//! (Being implemented.)
