"""Publishing: the renderers (feeds, website, email bodies) and the incremental build of the public folder."""
