"""The asv benchmark suite that ``asv.conf.json`` points at: adapters over bench/cell.py (one module)."""
