"""Folds and the executors that run them: the middle of the one path (docs/design.md).

``plan`` turns a config and the validated bars of every symbol (a single-symbol run is a universe of one)
into fold tasks and **units of work**; ``compute`` is what any executor runs for a unit (pure: bars in,
fold outputs as data out); ``store`` writes, reads back and resumes fold folders for every executor and
is the one reader of a saved fold (``predict``, paper trading, warm starts); ``execute`` runs units in
this process, in worker processes or on Ray -- the only thing an executor decides is where a unit runs.
"""
