"""The evidence: measurements behind docs/results.md, each run with ``python -m fairseq_admin_evidence.NAME``."""
