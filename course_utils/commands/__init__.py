"""What an operator runs, apart from what a learner reads: ``python -m course_utils <command>``.

* ``cli`` - the entry point: ``course``, ``download``, ``info``, ``doctor``, ``hub``, ``bench``, ``evaluate``,
  ``gpu-memory``, ``setup``;
* ``doctor`` - checks a seat before a workshop (device, memory, disk, libraries, widgets); ``doctor_models``
  its lines on the `sd15` repositories and files (known copies tried in turn); ``checks`` one line of its report;
* ``evaluate`` - scores `tiny`'s trained models against their targets (data/tiny/README.md);
* ``bench`` - lesson 9's measurements as one run and one table (docs/benchmarks.md);
* ``hub_mirror`` - olah, the Hub mirror that serves the lookalike repositories (tests, a workshop room);
* ``setup_env`` - a virtual environment with the course's libraries (a bare Python runs it).

They sit on the lesson modules, the world and the model layer; nothing below imports them.
"""
