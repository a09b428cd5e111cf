use std::io;

/// Why a bundle or key was refused. Every variant is raised before anything is written,
/// except [`Error::Payload`], which a streaming reader can only see at the end of a payload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "not a Cairn update bundle (bad magic); expected a .cairnb file made by `cairnctl bundle`"
    )]
    Magic,
    #[error("bundle format {0} is not supported (this node reads format {1})")]
    Format(u32, u32),
    #[error("bundle is truncated: {0}")]
    Truncated(String),
    #[error("bundle manifest: {0}")]
    Manifest(String),
    #[error("bundle signature does not verify with any trusted key ({0}); the bundle was tampered with or signed by a key this node does not trust")]
    Signature(String),
    #[error("bundle is for board {bundle}, this node is {node}")]
    Board { bundle: String, node: String },
    #[error("bundle is for architecture {bundle}, this node is {node}")]
    Arch { bundle: String, node: String },
    #[error("bundle version {bundle} is not newer than the running {running}; refusing a downgrade (force it with --allow-downgrade)")]
    Downgrade { bundle: String, running: String },
    #[error("bundle version {bundle} needs at least {min} running (this node runs {running}); update to {min} first")]
    TooOld {
        bundle: String,
        min: String,
        running: String,
    },
    #[error("payload {name}: {reason}")]
    Payload { name: String, reason: String },
    #[error("key: {0}")]
    Key(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// A read that hit the end of the input mid-way becomes [`Error::Truncated`].
    pub(crate) fn eof(e: io::Error, what: &str) -> Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::Truncated(format!("ends inside the {what}"))
        } else {
            Error::Io(e)
        }
    }
}
