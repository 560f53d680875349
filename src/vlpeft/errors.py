"""User-facing errors: one line naming the input and the problem; the CLI maps them to exit code 2."""


MAX_MESSAGE = 1000  # characters of one error line; what a value echoed in it may add is cut


class UserError(Exception):
    """A problem with something the user gave us (a file, a flag, a config value).

    The message must name the input and say what is wrong, on one line, e.g.
    `UserError("data/ann.json: not valid JSON (line 3, column 5)")`. Echo values with `shown`; a
    message longer than MAX_MESSAGE is cut all the same.
    """

    def __init__(self, message: object = "", *args):
        text = str(message)
        if len(text) > MAX_MESSAGE:
            text = f"{text[:MAX_MESSAGE - 40]}... ({len(text):,} characters, cut)"
        super().__init__(text, *args)


class DiskError(UserError):
    """A file that could not be written for lack of space or permission: a study stops at the first
    one (every other cell would hit it too) instead of failing its cells one by one."""


def shown(value: object, limit: int = 120) -> str:
    """repr(value) for an error message, at most `limit` characters, computed without expanding a
    huge or deeply nested value (a YAML file of aliases can stand for billions of items)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxtuple, r.maxset = 3, limit, limit, 8, 8, 8, 8
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def did_you_mean(name: str, choices) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f' (did you mean "{close[0]}"?)' if close else ""
