//! tsc
