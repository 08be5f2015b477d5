//! Core and codec errors mapped to AMQP reply codes, with RabbitMQ's reply text
//! (`NOT_FOUND - no queue 'q' in vhost '/'`).

use warren_core::Error;

use crate::codec::CodecError;

/// AMQP 0-9-1 reply codes (the spec's constants).
pub mod code {
    pub const REPLY_SUCCESS: u16 = 200;
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;

    /// The constant's name, as RabbitMQ prefixes reply texts with it.
    pub fn name(code: u16) -> &'static str {
        match code {
            REPLY_SUCCESS => "OK",
            CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
            NO_ROUTE => "NO_ROUTE",
            CONNECTION_FORCED => "CONNECTION_FORCED",
            ACCESS_REFUSED => "ACCESS_REFUSED",
            NOT_FOUND => "NOT_FOUND",
            RESOURCE_LOCKED => "RESOURCE_LOCKED",
            PRECONDITION_FAILED => "PRECONDITION_FAILED",
            FRAME_ERROR => "FRAME_ERROR",
            SYNTAX_ERROR => "SYNTAX_ERROR",
            COMMAND_INVALID => "COMMAND_INVALID",
            CHANNEL_ERROR => "CHANNEL_ERROR",
            UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            RESOURCE_ERROR => "RESOURCE_ERROR",
            NOT_ALLOWED => "NOT_ALLOWED",
            NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            _ => "INTERNAL_ERROR",
        }
    }
}

/// Whether an error closes only its channel or the whole connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Channel,
    Connection,
}

/// An error to report with channel.close or connection.close.
#[derive(Clone, Debug, PartialEq)]
pub struct Close {
    pub scope: Scope,
    pub code: u16,
    pub text: String,
    /// The method that failed, or (0, 0).
    pub method: (u16, u16),
}

impl Close {
    pub fn new(scope: Scope, code: u16, detail: impl std::fmt::Display) -> Close {
        Close { scope, code, text: format!("{} - {detail}", code::name(code)), method: (0, 0) }
    }

    pub fn channel(code: u16, detail: impl std::fmt::Display) -> Close {
        Close::new(Scope::Channel, code, detail)
    }

    pub fn connection(code: u16, detail: impl std::fmt::Display) -> Close {
        Close::new(Scope::Connection, code, detail)
    }

    /// Records which method failed.
    pub fn during(mut self, method: (u16, u16)) -> Close {
        self.method = method;
        self
    }

    /// The reply text, cut to fit a short string.
    pub fn reply_text(&self) -> String {
        let mut end = self.text.len().min(255);
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        self.text[..end].to_owned()
    }
}

impl From<Error> for Close {
    fn from(error: Error) -> Close {
        use code::*;
        let (scope, code) = match &error {
            Error::ExchangeNotFound { .. } | Error::QueueNotFound { .. } => (Scope::Channel, NOT_FOUND),
            Error::QueueLocked { .. } => (Scope::Channel, RESOURCE_LOCKED),
            Error::QueueInExclusiveUse { .. }
            | Error::ReservedName { .. }
            | Error::DefaultExchange
            | Error::InternalExchange { .. }
            | Error::AccessRefused { .. }
            | Error::AuthBackendFailed { .. } => (Scope::Channel, ACCESS_REFUSED),
            Error::Inequivalent { .. }
            | Error::QueueInUse { .. }
            | Error::QueueNotEmpty { .. }
            | Error::ExchangeInUse { .. }
            | Error::InvalidArgument { .. }
            | Error::InvalidPolicy { .. }
            | Error::InvalidExpiration { .. }
            | Error::ResourceLimit { .. } => (Scope::Channel, PRECONDITION_FAILED),
            Error::UnknownExchangeType { .. } => (Scope::Connection, COMMAND_INVALID),
            Error::VhostNotFound { .. } | Error::VhostAccessRefused { .. } => (Scope::Connection, NOT_ALLOWED),
            Error::LoginRefused { .. } | Error::LoopbackOnly { .. } => (Scope::Connection, ACCESS_REFUSED),
        };
        Close::new(scope, code, error)
    }
}

impl From<CodecError> for Close {
    fn from(error: CodecError) -> Close {
        use code::*;
        let code = match &error {
            CodecError::FrameTooLarge { .. }
            | CodecError::BadFrameEnd { .. }
            | CodecError::UnknownFrameType { .. }
            | CodecError::HeartbeatOnChannel { .. } => FRAME_ERROR,
            CodecError::Truncated
            | CodecError::TrailingBytes { .. }
            | CodecError::InvalidUtf8
            | CodecError::UnknownFieldType { .. }
            | CodecError::TableTooDeep
            | CodecError::PropertyFlagsContinued => SYNTAX_ERROR,
            CodecError::UnknownMethod { .. } => NOT_IMPLEMENTED,
        };
        Close::connection(code, error)
    }
}
