//! The node tree fleet files and image recipes are both written in: KDL read into raw nodes
//! with spans (`kdl_surface`, `kdl_syntax` for precise syntax errors), a checked `reader` that
//! reports unknown, missing and mistyped entries, and `diagnostic` (miette rendering with
//! file:line:col, the span underlined and a hint). No I/O.

pub mod diagnostic;
pub mod kdl_surface;
mod kdl_syntax;
pub mod raw;
pub mod reader;

use std::ops::Deref;

use miette::SourceSpan;

/// A value with the place in the source it came from.
#[derive(Debug, Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub span: SourceSpan,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: SourceSpan) -> Self {
        Spanned { value, span }
    }
}

/// Two spanned values are equal when their values are, wherever they were written.
impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Spanned<T> {}

impl<T> Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}
