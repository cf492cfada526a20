"""``python -m silvertine_streams`` runs the CLI."""

from silvertine_streams.cli import main

main()
