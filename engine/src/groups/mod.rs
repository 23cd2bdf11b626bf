//! Placeholder for the consumer-group coordinator (issue 4). The groups work replaces this file
//! wholesale; the broker only relies on the three items below:
//!
//! * `GroupCoordinator::new(logs) -> Arc<GroupCoordinator>` (created once in `Broker::start`),
//! * `SUPPORTED_APIS: &[(api_key, min_version, max_version)]` (merged into ApiVersions),
//! * `handle(&groups, api_key, api_version, &header, &mut body) -> Reply` for api keys
//!   8, 9, 10, 11, 12, 13, 14, 15, 16 and 22.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::RequestHeader;

use crate::broker::Reply;
use crate::log::LogManager;

/// Group/offset/producer APIs this module serves: none in the placeholder.
pub const SUPPORTED_APIS: &[(i16, i16, i16)] = &[];

#[derive(Debug)]
pub struct GroupCoordinator {
    _logs: Arc<LogManager>,
}

impl GroupCoordinator {
    pub fn new(logs: Arc<LogManager>) -> Arc<Self> {
        Arc::new(GroupCoordinator { _logs: logs })
    }
}

/// Placeholder: the group APIs are not advertised, so a client sending one gets the connection
/// closed with a logged reason, as for any unsupported API.
pub fn handle(
    _groups: &Arc<GroupCoordinator>,
    api_key: i16,
    api_version: i16,
    _header: &RequestHeader,
    _body: &mut Bytes,
) -> Reply {
    Reply::Close(format!("group API {api_key} v{api_version} is not implemented on this build"))
}
