"""The one exception type for problems the user can fix (bad input, missing files, ...).

Its message is a single line that names the file and the fix. The CLI prints it and exits 2.
"""


class UserError(Exception):
    """A problem with the user's input or environment, reported in one line (exit code 2)."""


class MissingDependency(UserError):
    """An optional stage's library (detectron2, PaddleSeg, ...) is not installed; the message says how."""


class StageFailed(Exception):
    """The work ran, but its result is not usable (e.g. DensePose found a person in too few frames).

    Not the input's fault in the sense of exit 2: the CLI prints the one-line message (which names
    the file and the fix) and exits 1.
    """
