//! SaslHandshake (v0–1) and SaslAuthenticate (v0–2), and v0's raw tokens.
//!
//! * Handshake on a non-SASL listener, or a second one: ILLEGAL_SASL_STATE (34).
//! * Unknown or disabled mechanism: UNSUPPORTED_SASL_MECHANISM (33) with the enabled list,
//!   then the connection is closed.
//! * Handshake v1: tokens come in SaslAuthenticate requests; a failure answers
//!   SASL_AUTHENTICATION_FAILED (58) with a message, then closes the connection.
//! * Handshake v0 (old clients): the next frames are raw tokens, answered with raw tokens; a
//!   failure closes the connection (the v0 protocol has no error response).
//!
//! Re-authentication (KIP-368) is not offered: `session_lifetime_ms` is 0.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::scram::ScramServer;
use super::{Mechanism, SaslState};
use crate::broker::{ConnCtx, Reply, Shared};
use crate::wire;
use crate::wire::fetch::{FetchFrame, Piece};

pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const ILLEGAL_SASL_STATE: i16 = 34;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// Kafka's connection.failed.authentication.delay.ms default: the connection of a failed
/// authentication is closed this long after its response is sent (KIP-306: slows down
/// password guessing; and clients such as kafka-python read the error response before they
/// see the close: with the close right behind the response, kafka-python 3 reported a bare
/// disconnection).
pub const FAILED_AUTHENTICATION_DELAY_MS: u64 = 100;

/// Answer `payload`, then close the connection [`FAILED_AUTHENTICATION_DELAY_MS`] later (a
/// failed authentication: the session is failed, nothing more is read or served). The delay
/// is a timer on the connection's network thread: no thread waits.
pub fn respond_then_close(payload: Vec<u8>, reason: String) -> Reply {
    Reply::NowThenClose(payload, reason, Duration::from_millis(FAILED_AUTHENTICATION_DELAY_MS))
}

pub(crate) fn handshake(shared: &Arc<Shared>, ctx: &mut ConnCtx, cid: i32, version: i16, mut body: Bytes) -> Result<Reply, String> {
    let req: SaslHandshakeRequest = wire::decode_body(&mut body, version)?;
    let enabled = shared.security.cfg.mechanisms();
    let mut resp =
        SaslHandshakeResponse::default().with_mechanisms(enabled.iter().map(|m| StrBytes::from_static_str(m.name())).collect());
    let encode = |r: &SaslHandshakeResponse| wire::encode_response(cid, ApiKey::SaslHandshake, version, r);
    if !ctx.protocol.sasl() || !matches!(ctx.session.sasl, SaslState::Start) {
        tracing::info!(peer = %ctx.peer, listener = ctx.protocol.name(), "SaslHandshake refused: not expected on this connection now");
        resp = resp.with_error_code(ILLEGAL_SASL_STATE);
        return Ok(Reply::Now(encode(&resp)));
    }
    let wanted = req.mechanism.as_str();
    match Mechanism::parse(wanted).filter(|m| enabled.contains(m)) {
        Some(mechanism) => {
            ctx.session.sasl = SaslState::Handshaken { mechanism, raw: version == 0 };
            Ok(Reply::Now(encode(&resp)))
        }
        None => {
            ctx.session.sasl = SaslState::Failed;
            resp = resp.with_error_code(UNSUPPORTED_SASL_MECHANISM);
            Ok(respond_then_close(encode(&resp), format!("SASL mechanism {wanted:?} is not enabled")))
        }
    }
}

/// The outcome of one SASL token.
enum Step {
    /// Send this token back; the exchange goes on or is complete (`ctx.session` says).
    Reply(Vec<u8>),
    /// Authentication failed with this message.
    Fail(String),
}

fn step(shared: &Shared, ctx: &mut ConnCtx, token: &[u8]) -> Step {
    match std::mem::take(&mut ctx.session.sasl) {
        SaslState::Handshaken { mechanism: Mechanism::Plain, .. } => {
            // RFC 4616: [authzid] NUL authcid NUL passwd.
            let mut parts = token.split(|b| *b == 0);
            let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                return Step::Fail("Authentication failed: invalid PLAIN message".into());
            };
            let (Ok(authzid), Ok(user), Ok(password)) =
                (std::str::from_utf8(authzid), std::str::from_utf8(user), std::str::from_utf8(password))
            else {
                return Step::Fail("Authentication failed: invalid PLAIN message".into());
            };
            if !authzid.is_empty() && authzid != user {
                return Step::Fail("Authentication failed: authorization id differs from the user name".into());
            }
            if user.is_empty() || !shared.security.credentials.check_plain(user, password) {
                return Step::Fail("Authentication failed: Invalid username or password".into());
            }
            ctx.session.principal = Some(format!("User:{user}"));
            ctx.session.sasl = SaslState::Done;
            Step::Reply(Vec::new())
        }
        SaslState::Handshaken { mechanism, raw } => {
            let hash = mechanism.scram().expect("PLAIN is handled above");
            let creds = &shared.security.credentials;
            match ScramServer::start(hash, token, &super::scram::server_nonce(), |u| creds.scram(u, hash)) {
                Ok((server, first)) => {
                    ctx.session.sasl = SaslState::ScramFirst { server: Box::new(server), raw };
                    Step::Reply(first)
                }
                Err(e) => Step::Fail(format!("Authentication failed: {e}")),
            }
        }
        SaslState::ScramFirst { server, .. } => match server.finish(token) {
            Ok(last) => {
                ctx.session.principal = Some(format!("User:{}", server.user()));
                ctx.session.sasl = SaslState::Done;
                Step::Reply(last)
            }
            Err(e) => Step::Fail(e),
        },
        other => {
            ctx.session.sasl = other;
            Step::Fail("SaslAuthenticate without a SaslHandshake".into())
        }
    }
}

pub(crate) fn authenticate(shared: &Arc<Shared>, ctx: &mut ConnCtx, cid: i32, version: i16, mut body: Bytes) -> Result<Reply, String> {
    let req: SaslAuthenticateRequest = wire::decode_body(&mut body, version)?;
    let encode = |r: &SaslAuthenticateResponse| wire::encode_response(cid, ApiKey::SaslAuthenticate, version, r);
    if !matches!(ctx.session.sasl, SaslState::Handshaken { raw: false, .. } | SaslState::ScramFirst { raw: false, .. }) {
        let resp = SaslAuthenticateResponse::default()
            .with_error_code(ILLEGAL_SASL_STATE)
            .with_error_message(Some(StrBytes::from_static_str("SaslAuthenticate is not expected now on this connection")));
        return Ok(if ctx.session.authenticated() {
            Reply::Now(encode(&resp))
        } else {
            ctx.session.sasl = SaslState::Failed;
            respond_then_close(encode(&resp), "SaslAuthenticate out of sequence".into())
        });
    }
    match step(shared, ctx, &req.auth_bytes) {
        Step::Reply(token) => {
            if let Some(p) = &ctx.session.principal {
                tracing::debug!(peer = %ctx.peer, principal = %p, "SASL authentication succeeded");
            }
            Ok(Reply::Now(encode(&SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token)))))
        }
        Step::Fail(msg) => {
            tracing::info!(peer = %ctx.peer, "SASL authentication failed: {msg}");
            ctx.session.sasl = SaslState::Failed;
            let resp = SaslAuthenticateResponse::default()
                .with_error_code(SASL_AUTHENTICATION_FAILED)
                .with_error_message(Some(StrBytes::from_string(msg.clone())));
            Ok(respond_then_close(encode(&resp), format!("SASL authentication failed: {msg}")))
        }
    }
}

/// A raw token after a v0 handshake (the frame is the token, the reply is the token).
pub(crate) fn raw_token(shared: &Arc<Shared>, ctx: &mut ConnCtx, frame: Vec<u8>) -> Reply {
    match step(shared, ctx, &frame) {
        // An empty token is an empty frame (PLAIN's success), which `Reply::Now` cannot carry
        // (an empty response means one that could not be encoded): a frame of its size prefix.
        Step::Reply(token) if token.is_empty() => Reply::Frame(FetchFrame {
            pieces: vec![Piece::Bytes(0i32.to_be_bytes().to_vec())],
            total_bytes: 4,
            records_bytes: 0,
        }),
        Step::Reply(token) => Reply::Now(token),
        Step::Fail(msg) => {
            tracing::info!(peer = %ctx.peer, "SASL authentication (v0 handshake) failed: {msg}");
            ctx.session.sasl = SaslState::Failed;
            Reply::Close(format!("SASL authentication failed: {msg}"))
        }
    }
}
