"""`python -m syncd`: the same as the `syncd` command."""

from syncd.app.cli import entry

entry()
