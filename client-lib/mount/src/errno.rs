//! What a failed dfs call is, as the errno a program sees.

use dfs_client::{ClientError, ErrorCode};
use fuser::Errno;

pub fn errno(e: &ClientError) -> Errno {
    match e {
        ClientError::Remote(code) => match code {
            ErrorCode::NotFound { .. } | ErrorCode::NotInTrash { .. } => Errno::ENOENT,
            ErrorCode::AlreadyExists { .. } => Errno::EEXIST,
            ErrorCode::NotADirectory { .. } => Errno::ENOTDIR,
            ErrorCode::IsADirectory { .. } => Errno::EISDIR,
            ErrorCode::NotEmpty { .. } => Errno::ENOTEMPTY,
            ErrorCode::InvalidPath { reason, .. } if reason.contains("long") => Errno::ENAMETOOLONG,
            ErrorCode::InvalidPath { .. } | ErrorCode::InvalidArgument { .. } => Errno::EINVAL,
            ErrorCode::NoSpace { .. } | ErrorCode::NotEnoughServers { .. } => Errno::ENOSPC,
            ErrorCode::Forbidden { .. } | ErrorCode::AuthFailed { .. } => Errno::EACCES,
            _ => Errno::EIO,
        },
        _ => Errno::EIO,
    }
}
