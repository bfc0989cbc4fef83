"""The archive: digest files parsed into the model, their cache, where they come from, and the writer that makes them."""
