"""The course's one exception type: an error the learner can fix, whose message says how."""


class CourseError(RuntimeError):
    """An error the learner can fix; its message says how."""
