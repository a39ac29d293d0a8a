"""stemd: a watched-folder daemon that separates music into stems with Demucs."""

__version__ = "0.1.0"
