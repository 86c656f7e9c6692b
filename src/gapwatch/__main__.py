"""`python -m gapwatch` runs the command line."""

from gapwatch.cli import main

main()
