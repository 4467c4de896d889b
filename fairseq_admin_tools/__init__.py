"""The tools: data preparation, corpora, evaluation and summaries; they import neither torch nor fairseq.

Also the two things every part shares: user errors (:mod:`.errors`) and atomic file writes (:mod:`.files`).
"""
