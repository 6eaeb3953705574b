"""Exit codes of the `lowbit` CLI that scripts can rely on."""

OK = 0
FAILURE = 1  # unexpected failure (a bug): please report it
USAGE = 2  # bad command line (argparse uses 2 as well)
BAD_INPUT = 3  # a model, data or config file was rejected; the message says why
ACCURACY_TARGET_MISSED = 4  # the job ran but did not meet the requested accuracy target
CANCELLED = 5
SERVICE_ERROR = 6  # the lowbit service answered with an error or could not be reached
