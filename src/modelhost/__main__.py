"""``python -m modelhost`` runs the CLI."""

from modelhost.cli import main

main()
