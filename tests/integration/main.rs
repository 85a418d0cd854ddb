//! The one integration-test binary: every test runs the real `fleet` binary.

mod contain;
mod db_keys;
mod diagnostics;
mod gateway;
mod hosts;
mod house;
mod image;
mod incus;
mod kill;
mod lifecycle;
mod page;
mod proxy;
mod serve;
mod spend;
mod spine;
mod support;
mod trace;
