//! The state every handler of the API shares.

use space::Space;

/// The Space, the bound of a message body, and the places for watchers of `…/events`.
#[derive(Clone)]
pub(crate) struct Api {
    pub space: Space,
    pub max_body: usize,
    /// Places for watchers of `…/events`.
    pub watchers: std::sync::Arc<tokio::sync::Semaphore>,
}
