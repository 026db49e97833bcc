//! RamenOS kernel logic, hardware-free and tested on the host.
#![no_std]
#![forbid(unsafe_code)]
