//! `.env` files, read and written the way their owners expect.
//!
//! [`parse`] reads what real `.env` files hold into a [`Document`] that prints back byte for byte, and
//! whose edits ([`Document::set`], [`Document::remove`], [`Document::rename`]) change one value or one
//! line and nothing else. [`Locked`] writes a file holding secrets the way DESIGN §5 says: locked,
//! atomically, 0600, with a backup in the folder its caller names (outside the project), and refuses
//! a file larger than [`MAX_FILE`].
//!
//! Must never: expand `${VAR}`, reformat a line it was not asked to change, or put a value in an error
//! or a `Debug` output (values are secrets).

mod document;
mod write;

pub use document::{Document, EditError, Entry, ParseError, parse};
pub use write::{BACKUPS_KEPT, Locked, MAX_FILE, WriteError, Written};
