"""Ways to invert a photo: DDIM (the trajectory), null-text optimisation, negative-prompt, direct.

`source.py` turns a choice among them into what editing needs: the per-step unconditional embeddings
and the per-step correction of the source branch.
"""
