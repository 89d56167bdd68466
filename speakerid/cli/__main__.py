"""``python -m speakerid.cli ...`` (and ``torchrun -m speakerid.cli train ...``) run the CLI."""

from speakerid.cli import main

main()
