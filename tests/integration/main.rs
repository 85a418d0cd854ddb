//! The one integration-test binary: every test runs the real `fleet` binary.

mod diagnostics;
mod spine;
mod support;
