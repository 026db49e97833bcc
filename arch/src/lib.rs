//! x86_64 hardware layer for RamenOS.
#![no_std]
