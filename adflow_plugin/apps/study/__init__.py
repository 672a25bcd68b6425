"""The paper's user study (Sec. 4.1, Table 1) as a tool.

``create`` builds a study folder from ``basicsr test`` results, ``db`` keeps the votes in SQLite,
``server`` is the participants' web app, ``analyse`` turns votes into a Table 1-style result.
Nothing here is imported by training or testing; the web libraries load only for ``serve``.
"""


class StudyError(Exception):
    """A problem with the user's input or study folder, said in one line."""
