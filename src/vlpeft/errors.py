"""User-facing errors: one line naming the input and the problem; the CLI maps them to exit code 2."""


class UserError(Exception):
    """A problem with something the user gave us (a file, a flag, a config value).

    The message must name the input and say what is wrong, on one line, e.g.
    `UserError("data/ann.json: not valid JSON (line 3, column 5)")`.
    """


def did_you_mean(name: str, choices) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f' (did you mean "{close[0]}"?)' if close else ""
