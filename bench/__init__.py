"""linbench's harness: data, the equal-results gate, the runner, reports and the CLI."""


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, exit status 2."""
