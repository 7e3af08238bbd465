//! Unit tests of the injector internals.
