//! Typed ids of the tracker's rows: a project id is never passed where an issue id belongs. They parse from a path segment and travel to SQL as their uuid.

tenantry_db::typed_id! {
    /// A project's id.
    pub struct ProjectId;
    /// An issue's id.
    pub struct IssueId;
    /// A comment's id.
    pub struct CommentId;
}
