"""`python -m charlm` runs the command-line interface."""

from charlm.cli import cli

if __name__ == "__main__":
    cli()
