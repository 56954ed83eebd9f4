"""SISA sharded fine-tuning: recipe and placement (recipe.py), training, merge and exact retraining (train.py).

Pure: no Django, no environment reads.
"""
