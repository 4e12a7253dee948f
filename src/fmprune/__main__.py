"""``python -m fmprune`` runs the command line."""

from .cli import main

main()
