"""The typed HTTP client of the FaceVal API (sync and async) and the batch submitter."""
