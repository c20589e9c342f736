"""`python -m clipad.app`: an interactive inspection app (Gradio) for trained clipad checkpoints.

models.py loads the checkpoints once; scoring.py scores images through predict's own pipeline; references.py
keeps few-shot prompt memory until the references change; figures.py and downloads.py make what the page shows
and offers; ui.py lays out the page and serves it.
"""
