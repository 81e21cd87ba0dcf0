"""Datasets: sources (raw files → arrays), variants, FFCV writing and loading."""
