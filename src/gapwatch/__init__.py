"""gapwatch: watch the gap between what a service business promises and what it delivers."""

__version__ = "0.1.0"
