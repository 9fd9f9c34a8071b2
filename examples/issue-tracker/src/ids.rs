//! Typed ids of the tracker's rows: a project id is never passed where an issue id belongs. They parse from a path segment and travel to SQL as their uuid.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// From the uuid a row holds.
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The uuid, as a statement parameter.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }
    )*};
}

typed_id! {
    /// A project's id.
    ProjectId;
    /// An issue's id.
    IssueId;
    /// A comment's id.
    CommentId;
}
