"""claude-budget-exporter: how much Claude credit is left, billed and estimated."""

# the one place the version is written: pyproject.toml reads it from here, and a literal costs
# nothing at start, where asking the installed metadata costs every command 30 ms of imports
__version__ = "0.1.0"
