"""The feeds' file names in the public folder and their media types.

Apart from the renderers, so that what only serves or looks for the files (the web app,
the manifest, a service answering its feeds while it starts) imports none of them.
"""

from __future__ import annotations

__all__ = [
    "ATOM_NAME",
    "ATOM_TYPE",
    "FEED_NAMES",
    "FEED_PATHS",
    "ISSUES_ATOM_NAME",
    "ISSUES_JSON_NAME",
    "JSON_NAME",
    "JSON_TYPE",
]

# The daily feeds (newsletter.publish.feed).
ATOM_NAME = "feed.atom"
JSON_NAME = "feed.json"
# The weekly issues' feeds (newsletter.publish.issue_feed).
ISSUES_ATOM_NAME = "issues.atom"
ISSUES_JSON_NAME = "issues.json"
ATOM_TYPE = "application/atom+xml"
JSON_TYPE = "application/feed+json"
# Every feed, by file name: what the web app answers as a feed.
FEED_NAMES = frozenset({ATOM_NAME, JSON_NAME, ISSUES_ATOM_NAME, ISSUES_JSON_NAME})
# The same, as the paths a request asks for.
FEED_PATHS = frozenset(f"/{name}" for name in FEED_NAMES)
