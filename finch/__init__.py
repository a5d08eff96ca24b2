"""finch: a local proxy in front of the Claude API that learns to answer part of its traffic."""

__version__ = "0.1.0"
