//! The RamenOS kernel image.
#![no_std]
#![no_main]
