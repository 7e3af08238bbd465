//! The platform's side: the control endpoint (TCP, bearer token, off unless configured)
//! and the event stream the platform reads to learn what happens in the sandbox.

pub mod control;
pub mod events;
