"""Hugging Face Daily Papers digests in Korean, as an Atom feed and a weekly HTML email."""

from __future__ import annotations

from newsletter.archive.digest import DigestError, load_archive, parse_bytes, parse_file, parse_text
from newsletter.config import Config, load_config
from newsletter.models import Archive, Digest, Media, Paper, Pick, Problem, Section
from newsletter.select import IsoWeek, top_daily, top_weekly

__all__ = [
    "Archive",
    "Config",
    "Digest",
    "DigestError",
    "IsoWeek",
    "Media",
    "Paper",
    "Pick",
    "Problem",
    "Section",
    "load_archive",
    "load_config",
    "parse_bytes",
    "parse_file",
    "parse_text",
    "top_daily",
    "top_weekly",
]
