//! TODO control
