"""The HTTP server: the FastAPI app, its dynamic batcher and its page."""
