"""The asv benchmark suite that ``asv.conf.json`` points at: adapters over bench/timing/cell.py (one module)."""
