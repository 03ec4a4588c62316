//! Tower layers and axum extractors for MPP.
