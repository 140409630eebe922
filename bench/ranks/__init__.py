"""Past one process: K ranks started as a gang (:mod:`distributed`) or by torchrun (:mod:`torchrun`, the ``ranks``
command)."""
