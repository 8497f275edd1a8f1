"""aib-sdk provider: a local image gallery with Azure Compute Gallery semantics."""
