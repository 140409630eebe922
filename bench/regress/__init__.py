"""Regression tracking in one place: the statistics every verdict is made with (:mod:`.stats`), the verdicts of
two runs (:mod:`.verdicts`), ``linbench ab``'s paired rounds (:mod:`.ab`, :mod:`.ab_worker`, :mod:`.rounds`)
and its calibration (:mod:`.calibration`), ``linbench compare`` (:mod:`.compare`), and the change points of
asv's history (:mod:`.change_points`) with the ``linbench history`` command (:mod:`.history`)."""
